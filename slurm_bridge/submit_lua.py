"""The job_submit.lua that puts every job's residency zone into its constraint at submit.

Rendered from the config (account and partition zones as Lua tables), so
slurmctld applies the policy itself: a job never reaches a node outside its
zone, also when it is submitted straight to a burst partition or an idle
cloud node of the wrong region is already up. `slurm_job_modify` re-appends
the zone when an owner rewrites the constraint with `scontrol update`.
"""

from __future__ import annotations

from .config import Config

LIBRARY_NAME = "slurm-bridge.lua"


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _table(mapping: dict[str, str]) -> str:
    if not mapping:
        return "{}"
    return "{\n" + "".join(f"  [{_lua_str(k)}] = {_lua_str(v)},\n" for k, v in sorted(mapping.items())) + "}"


def library(cfg: Config, config_path: str) -> str:
    # Every listed account, with "" for a zone that is everywhere: an account missing here would
    # fall back to the default zone, which may be narrower than its own.
    accounts = {n: (a.zone.feature if a.zone.countries is not None else "")
                for n, a in cfg.accounts.items() if n != "default"}
    default = cfg.accounts["default"].zone
    partitions = {p: z.feature for p, z in cfg.partition_zones.items() if z.countries is not None}
    return f'''-- Rendered by `slurm-bridge conf render` from {config_path}; do not edit by hand.
-- Residency: every job carries the zones of its account and partitions as res_<zone> constraints.
local M = {{}}

-- account -> zone feature ("" for a zone that is everywhere); unlisted accounts use DEFAULT
M.ACCOUNT_ZONE = {_table(accounts)}
M.DEFAULT_ZONE = {_lua_str(default.feature if default.countries is not None else "")}
-- partition -> zone feature
M.PARTITION_ZONE = {_table(partitions)}

local function add(list, seen, feature)
  if feature ~= nil and feature ~= "" and not seen[feature] then
    seen[feature] = true
    table.insert(list, feature)
  end
end

function M.zone_features(account, partitions)
  local list, seen = {{}}, {{}}
  local zone = nil
  if account ~= nil and account ~= "" then zone = M.ACCOUNT_ZONE[string.lower(account)] end
  if zone == nil then zone = M.DEFAULT_ZONE end
  add(list, seen, zone)
  for part in string.gmatch(partitions or "", "[^,]+") do
    add(list, seen, M.PARTITION_ZONE[part])
  end
  return list
end

-- Slurm reads constraints left to right without '&' precedence and takes one level of
-- parentheses: wrap a plain expression, only append to one that has parentheses. Never skip a
-- zone because the string mentions it already: "res_se|res_fr" names res_fr and would escape.
function M.with_zones(features, zones)
  if #zones == 0 then return features end
  local tail = table.concat(zones, "&")
  if features == nil or features == "" then return tail end
  if string.find(features, "(", 1, true) then return features .. "&" .. tail end
  return "(" .. features .. ")&" .. tail
end

function M.account_of(job_desc)
  if job_desc.account ~= nil and job_desc.account ~= "" then return job_desc.account end
  return job_desc.default_account
end

function M.submit(job_desc)
  local account = M.account_of(job_desc)
  if account == nil then
    -- Without an account the zone cannot be known: refuse rather than guess a wider one.
    slurm.log_user("slurm-bridge: no account for this job; submit with -A ACCOUNT")
    return slurm.ERROR
  end
  local zones = M.zone_features(account, job_desc.partition or job_desc.default_partition)
  job_desc.features = M.with_zones(job_desc.features, zones)
  return slurm.SUCCESS
end

function M.modify(job_desc, job_rec)
  if job_desc.features == nil and job_desc.account == nil and job_desc.partition == nil then
    return slurm.SUCCESS
  end
  local account = job_desc.account or job_rec.account
  local partitions = job_desc.partition or job_rec.partition
  local features = job_desc.features
  if features == nil then features = job_rec.features end
  job_desc.features = M.with_zones(features, M.zone_features(account, partitions))
  return slurm.SUCCESS
end

return M
'''


def job_submit(library_path: str) -> str:
    return f'''-- Rendered by `slurm-bridge conf render`. If you have a job_submit.lua of your own, add the
-- dofile line and the two calls to it instead.
local bridge = dofile({_lua_str(library_path)})

function slurm_job_submit(job_desc, part_list, submit_uid)
  return bridge.submit(job_desc)
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return bridge.modify(job_desc, job_rec)
end
'''

-- Rendered by `slurm-bridge conf render` from /etc/slurm-bridge/bridge.toml; do not edit by hand.
-- Residency: every job carries the zones of its account and partitions as res_<zone> constraints.
local M = {}

-- account -> zone feature ("" for a zone that is everywhere); unlisted accounts use DEFAULT
M.ACCOUNT_ZONE = {
  ["medical"] = "res_de",
  ["physics"] = "",
  ["teaching"] = "res_eu",
}
M.DEFAULT_ZONE = "res_eu"
-- partition -> zone feature
M.PARTITION_ZONE = {
  ["gpu-clinic"] = "res_de",
}

local function add(list, seen, feature)
  if feature ~= nil and feature ~= "" and not seen[feature] then
    seen[feature] = true
    table.insert(list, feature)
  end
end

function M.zone_features(account, partitions)
  local list, seen = {}, {}
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

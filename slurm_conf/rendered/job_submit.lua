-- Rendered by `slurm-bridge conf render`. If you have a job_submit.lua of your own, add the
-- dofile line and the two calls to it instead.
local bridge = dofile("/etc/slurm/slurm-bridge.lua")

function slurm_job_submit(job_desc, part_list, submit_uid)
  return bridge.submit(job_desc)
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return bridge.modify(job_desc, job_rec)
end

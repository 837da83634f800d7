-- Argo CD health of an ACK SageMaker TrainingJob, read from the job's own status.
-- Argo CD's built-in check for *.services.k8s.aws reads only the ACK conditions, so a Failed or
-- Stopped job would show Healthy (a failed job is Synced and Ready). gopher-lua (Lua 5.1):
-- the object is the global `obj`; the script returns {status=..., message=...}.
local hs = {}
local status = obj.status or {}

local function condition(kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind and c.status == "True" then
      return c
    end
  end
  return nil
end

local terminal = condition("ACK.Terminal")
if terminal ~= nil then
  hs.status = "Degraded"
  hs.message = terminal.message or "ACK.Terminal: the controller cannot create or update the job"
  return hs
end

local job = status.trainingJobStatus
if job == nil then
  local recoverable = condition("ACK.Recoverable")
  hs.status = "Progressing"
  if recoverable ~= nil and recoverable.message ~= nil then
    hs.message = "Waiting: " .. recoverable.message
  else
    hs.message = "Waiting for SageMaker to create the training job"
  end
  return hs
end

if job == "Completed" then
  hs.status = "Healthy"
  local artifacts = status.modelArtifacts or {}
  if artifacts.s3ModelArtifacts ~= nil then
    hs.message = "Completed: " .. artifacts.s3ModelArtifacts
  else
    hs.message = "Completed"
  end
elseif job == "InProgress" or job == "Stopping" then
  hs.status = "Progressing"
  hs.message = status.secondaryStatus or job
elseif job == "Failed" or job == "Stopped" then
  hs.status = "Degraded"
  hs.message = status.failureReason or (job .. ": " .. (status.secondaryStatus or "no reason given"))
else
  hs.status = "Progressing"
  hs.message = "Unknown training job status " .. tostring(job)
end
return hs

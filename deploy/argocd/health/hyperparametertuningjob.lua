-- Argo CD health of an ACK SageMaker HyperParameterTuningJob, read from the job's own status.
-- Argo CD's built-in check for *.services.k8s.aws reads only the ACK conditions, so a Failed or
-- Stopped job would show Healthy. gopher-lua (Lua 5.1): the object is the global `obj`; the
-- script returns {status=..., message=...}.
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

local function best()
  local b = status.bestTrainingJob
  if b == nil or b.trainingJobName == nil then
    return nil
  end
  local text = "best training job " .. b.trainingJobName
  local metric = b.finalHyperParameterTuningJobObjectiveMetric
  if metric ~= nil and metric.value ~= nil then
    text = text .. " (" .. (metric.metricName or "objective") .. "=" .. tostring(metric.value) .. ")"
  end
  return text
end

local terminal = condition("ACK.Terminal")
if terminal ~= nil then
  hs.status = "Degraded"
  hs.message = terminal.message or "ACK.Terminal: the controller cannot create the tuning job"
  return hs
end

local job = status.hyperParameterTuningJobStatus
if job == nil then
  local recoverable = condition("ACK.Recoverable")
  hs.status = "Progressing"
  if recoverable ~= nil and recoverable.message ~= nil then
    hs.message = "Waiting: " .. recoverable.message
  else
    hs.message = "Waiting for SageMaker to create the tuning job"
  end
  return hs
end

if job == "Completed" then
  hs.status = "Healthy"
  hs.message = "Completed: " .. (best() or "no best training job reported")
elseif job == "InProgress" or job == "Stopping" then
  hs.status = "Progressing"
  hs.message = job
  if best() ~= nil then
    hs.message = job .. ": so far " .. best()
  end
elseif job == "Failed" or job == "Stopped" then
  hs.status = "Degraded"
  hs.message = status.failureReason or (job .. ": no reason given")
else
  hs.status = "Progressing"
  hs.message = "Unknown tuning job status " .. tostring(job)
end
return hs

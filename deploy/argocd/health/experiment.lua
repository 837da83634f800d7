-- Argo CD health of a Katib Experiment (kubeflow.org/v1beta1), from its conditions: Succeeded,
-- Failed, Running/Restarting/Created, with the best trial so far (status.currentOptimalTrial).
-- Argo CD has no built-in check for it. gopher-lua (Lua 5.1): the object is the global `obj`;
-- the script returns {status=..., message=...}.
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
  local t = status.currentOptimalTrial
  if t == nil or t.bestTrialName == nil or t.bestTrialName == "" then
    return nil
  end
  local text = "best trial " .. t.bestTrialName
  local objective = ((obj.spec or {}).objective or {}).objectiveMetricName
  for _, m in ipairs((t.observation or {}).metrics or {}) do
    if m.name == objective then
      text = text .. " (" .. m.name .. "=" .. tostring(m.latest) .. ")"
    end
  end
  return text
end

local function trials()
  local done = status.trialsSucceeded or 0
  local total = (obj.spec or {}).maxTrialCount
  local text = tostring(done) .. " trials succeeded"
  if total ~= nil then
    text = tostring(done) .. "/" .. tostring(total) .. " trials succeeded"
  end
  if (status.trialsFailed or 0) > 0 then
    text = text .. ", " .. tostring(status.trialsFailed) .. " failed"
  end
  return text
end

local failed = condition("Failed")
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = failed.message or "Experiment failed"
  return hs
end
local succeeded = condition("Succeeded")
if succeeded ~= nil then
  hs.status = "Healthy"
  hs.message = "Succeeded: " .. (best() or "no best trial reported")
  return hs
end

hs.status = "Progressing"
if condition("Running") ~= nil or condition("Restarting") ~= nil then
  hs.message = "Running: " .. trials()
  if best() ~= nil then
    hs.message = hs.message .. "; so far " .. best()
  end
else
  hs.message = "Waiting for Katib to start the experiment"
end
return hs

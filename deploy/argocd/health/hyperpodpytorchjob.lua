-- Argo CD health of a SageMaker HyperPod HyperPodPyTorchJob (sagemaker.amazonaws.com/v1, the
-- HyperPod training operator), from the conditions that are True: Failed wins, then Completed
-- (or Succeeded), then Suspended (a Kueue queue holds it), Restarting (auto-resume after a
-- fault) and Running. Argo CD has no built-in check for this group. gopher-lua (Lua 5.1): the
-- object is the global `obj`; the script returns {status=..., message=...}.
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

local function describe(c, fallback)
  local text = c.message or c.reason or fallback
  if c.reason ~= nil and c.message ~= nil then
    text = c.reason .. ": " .. c.message
  end
  return text
end

local function restarts(text)
  if status.restartCount ~= nil and status.restartCount > 0 then
    return text .. " (restart " .. tostring(status.restartCount) .. ")"
  end
  return text
end

local failed = condition("Failed")
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = describe(failed, "HyperPodPyTorchJob failed")
  return hs
end
local done = condition("Completed") or condition("Succeeded")
if done ~= nil then
  hs.status = "Healthy"
  hs.message = describe(done, "HyperPodPyTorchJob completed")
  return hs
end
local suspended = condition("Suspended")
if suspended ~= nil then
  hs.status = "Suspended"
  hs.message = describe(suspended, "HyperPodPyTorchJob is suspended")
  return hs
end

hs.status = "Progressing"
local restarting = condition("Restarting")
local running = condition("Running")
if restarting ~= nil then
  hs.message = restarts(describe(restarting, "Restarting"))
elseif running ~= nil then
  hs.message = restarts(describe(running, "Running"))
else
  hs.message = "Waiting for the training operator (and Kueue) to start the pods"
end
return hs

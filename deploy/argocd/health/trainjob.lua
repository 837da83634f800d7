-- Argo CD health of a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1), from its
-- conditions: Complete, Failed (reason DeadlineExceeded for activeDeadlineSeconds), Suspended.
-- Argo CD has no built-in check for this group. gopher-lua (Lua 5.1): the object is the global
-- `obj`; the script returns {status=..., message=...}.
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

local failed = condition("Failed")
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = describe(failed, "TrainJob failed")
  return hs
end
local complete = condition("Complete")
if complete ~= nil then
  hs.status = "Healthy"
  hs.message = describe(complete, "TrainJob completed")
  return hs
end
local suspended = condition("Suspended")
if suspended ~= nil then
  hs.status = "Suspended"
  hs.message = describe(suspended, "TrainJob is suspended")
  return hs
end

hs.status = "Progressing"
local active, ready = 0, 0
local seen = false
for _, j in ipairs(status.jobsStatus or {}) do
  seen = true
  active = active + (j.active or 0)
  ready = ready + (j.ready or 0)
end
if seen then
  hs.message = "Running: " .. tostring(active) .. " active, " .. tostring(ready) .. " ready"
else
  hs.message = "Waiting for the TrainJob controller to create the JobSet"
end
return hs

"""The fit and cost planner: will a recipe run and fit on the instance it names, and what may
it cost? Standard library only (no torch): render and validate call :func:`check_plan`.

- :mod:`shapes`: model shapes from ``config.json`` or the shipped table;
- :mod:`instances`: the instance catalogue (``instances.json``);
- :mod:`placement`: the launcher's placement and world size;
- :mod:`memory`: the learner's and the vLLM server's memory;
- :mod:`cost`: the dated price table (``prices.json``), spot and tuning;
- :mod:`planner`: all of it for one recipe; :mod:`check`: the problems render reports;
- :mod:`report`: the table and JSON of ``mtgrpo plan``.
"""

from mtgrpo.plan.check import check_plan
from mtgrpo.plan.planner import plan_recipe

__all__ = ["check_plan", "plan_recipe"]

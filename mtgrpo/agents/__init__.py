"""Bring your own agent (docs/agents.md): an OpenAI-compatible endpoint per episode whose calls
are recorded token for token and trained with turn-level credit.

Modules: ``endpoint`` (the server), ``chat`` (messages to token ids and back), ``recorder``
(stitching calls into sequences), ``runner`` (running the agent per episode), ``loading``
(the ``agent``/``agent_command`` keys), ``scoring`` (turn rewards per call), ``build`` (the
trainer's wiring). Importing this package is cheap (standard library only); the modules that
need the trainer's dependencies import them themselves.
"""

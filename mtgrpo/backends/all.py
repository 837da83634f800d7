"""The one table of backends: a recipe's ``backend:`` value -> its :class:`Backend`.

Adding a backend is its own package (``mtgrpo/<name>/backend.py`` with an object implementing
:class:`mtgrpo.backends.protocol.Backend`, its templates under ``templates/<name>/``, its
health checks under ``deploy/argocd/health/``) plus one line here. Nothing else in
``render/``, ``validate/``, ``commands/``, ``operate/``, ``recipes/``, ``plan/`` or ``gitops/``
names a backend. The first entry is the default (a recipe without ``backend:``).
"""

from __future__ import annotations

from mtgrpo.ack.backend import BACKEND as ACK
from mtgrpo.backends.protocol import Backend
from mtgrpo.hyperpod.backend import BACKEND as HYPERPOD
from mtgrpo.kubeflow.backend import BACKEND as KUBEFLOW

BACKENDS: dict[str, Backend] = {
    ACK.name: ACK,
    KUBEFLOW.name: KUBEFLOW,
    HYPERPOD.name: HYPERPOD,
}

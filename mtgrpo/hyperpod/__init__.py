"""SageMaker HyperPod (EKS) as a backend (``backend: hyperpod``, docs/hyperpod.md).

A recipe renders one ``HyperPodPyTorchJob`` (``sagemaker.amazonaws.com/v1``, run by the
HyperPod training operator) and the ConfigMap its pods read, for the nodes of a HyperPod
cluster: SageMaker instance types, EFA, the operator's auto-resume, Kueue task governance.

contract: what the rendered job and the image agree on (mount points, variables, command).
schema: the ``hyperpod:`` recipe section and the ``job:`` keys that keep their meaning.
render: recipe -> ConfigMap + HyperPodPyTorchJob (templates/hyperpod/).
validate: the rendered job against the HyperPod SDK's own models (vendor/), and its rules.
security: the locked-down pod (non-root, no privilege escalation, read-only root, ...).
operate: status / wait / logs of HyperPodPyTorchJobs.
plan: ``mtgrpo plan`` for a HyperPod recipe (its nodes are SageMaker instance types).
platform, job: the image's entry on HyperPod pods (``python -m mtgrpo.hyperpod train`` under
the operator's ``hyperpodrun``), presenting the job to the same launcher as SageMaker.
backend: the one object a backend registry lists.
"""

"""mtgrpo: multi-turn GRPO agents trained on SageMaker, driven from Kubernetes by GitOps."""

__version__ = "0.1.0"

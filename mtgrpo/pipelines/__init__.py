"""The tune-then-train Kubeflow pipeline and the RBAC its runs need. See docs/operate.md."""

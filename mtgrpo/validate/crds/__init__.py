"""Data only: the ACK SageMaker CRDs shipped with the package (see SOURCE.md)."""

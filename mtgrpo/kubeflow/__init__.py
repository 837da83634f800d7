"""The trainer image on Kubeflow Trainer v2 (``backend: kubeflow``, docs/kubeflow.md).

contract: the mount points and variables the rendered resources and the image share.
platform: SageMaker or Kubeflow, and the ``PET_*`` variables as the launcher's topology.
s3: channel download, checkpoint upload and resume, model upload (boto3).
job: the Kubeflow mode of ``python -m mtgrpo.sagemaker train``.
"""

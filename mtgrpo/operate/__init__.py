"""Operating jobs from the cluster: status, wait, create-and-wait, logs and artifacts.

The cluster side talks to the ACK SageMaker custom resources through the ``kubernetes`` client
(``kube``); CloudWatch logs and S3 artifacts go through boto3. See docs/operate.md.
"""

from mtgrpo.operate.create import create_and_wait
from mtgrpo.operate.jobs import JobView, view
from mtgrpo.operate.kube import TRAINING, TUNING, Kube, connect
from mtgrpo.operate.wait import Outcome, wait_for

__all__ = ["TRAINING", "TUNING", "JobView", "Kube", "Outcome", "connect", "create_and_wait",
           "view", "wait_for"]

"""What the ACK SageMaker controller would send: an ACK resource translated into its API request.

The controller's code is generated from the SageMaker API, so every spec field maps to the API
member whose name is equal ignoring case (``roleARN`` ~ ``RoleArn``, ``s3URI`` ~ ``S3Uri``), except
``type_`` ~ ``Type``. The translation is driven by botocore's SageMaker service model, so it needs
no hand-written field table and follows the model botocore ships.
"""

from mtgrpo.ack.shapes import Node, input_node, node, service_model
from mtgrpo.ack.translate import (OPERATIONS, TranslationError, member_for, operation_for,
                                  to_request)

__all__ = ["OPERATIONS", "Node", "TranslationError", "input_node", "member_for", "node",
           "operation_for", "service_model", "to_request"]

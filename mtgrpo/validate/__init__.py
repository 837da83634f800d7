"""Validation before anything is applied: the ACK CRDs check almost nothing
(docs/ack-controller.md).

- :func:`check_recipe`: the rules between a merged recipe's values (spot, limits, tuning ranges,
  ARNs, S3 URIs, channels, environment, metric definitions) and secrets.
- :func:`check_resources`: each rendered object against its CRD with unknown fields rejected,
  and the Create* request ACK would send against botocore's SageMaker service model.
- :func:`default_crd_dir`: where the CRDs are read from.

Every result is a list of :class:`mtgrpo.errors.Problem` (file, key path, what, allowed).
"""

from mtgrpo.validate.crd_schema import default_crd_dir
from mtgrpo.validate.recipe_rules import check_recipe
from mtgrpo.validate.resources import check_resources

__all__ = ["check_recipe", "check_resources", "default_crd_dir"]

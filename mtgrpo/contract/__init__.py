"""The contract both halves import: trainer config schema, metric line format, channel names.

Standard library only: the renderer imports this without torch.
"""

from mtgrpo.contract.channels import CHANNELS, REQUIRED_CHANNELS
from mtgrpo.contract.config import TrainerConfig
from mtgrpo.contract.metrics import (DEFAULT_OBJECTIVE, METRICS, format_metric_line,
                                     metric_definitions, metric_regex, parse_metric_line)

__all__ = ["CHANNELS", "REQUIRED_CHANNELS", "TrainerConfig", "DEFAULT_OBJECTIVE", "METRICS",
           "format_metric_line", "metric_definitions", "metric_regex", "parse_metric_line"]

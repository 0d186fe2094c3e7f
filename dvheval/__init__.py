"""dvheval: check radiotherapy plans against dose-volume protocols."""

__version__ = "0.1.0"

from .calc import compute_dvhs
from .dvh import DVH
from .metrics import evaluate_metric, parse_metric
from .results import PlanDVHs, StructureResult

__all__ = [
    "DVH",
    "PlanDVHs",
    "StructureResult",
    "compute_dvhs",
    "evaluate_metric",
    "parse_metric",
]

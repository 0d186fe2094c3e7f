"""dvheval: check radiotherapy plans against dose-volume protocols."""

__version__ = "0.1.0"

from dvheval.engine.compute import compute_dvhs
from dvheval.engine.dvh import DVH
from dvheval.engine.metrics import evaluate_metric, parse_metric
from dvheval.engine.results import PlanDVHs, StructureResult

__all__ = [
    "DVH",
    "PlanDVHs",
    "StructureResult",
    "compute_dvhs",
    "evaluate_metric",
    "parse_metric",
]

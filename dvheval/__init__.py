"""dvheval: check radiotherapy plans against dose-volume protocols.

The library in four calls::

    import dvheval
    plan = dvheval.compute_dvhs("plan_folder/")          # DVHs and metrics of every ROI
    plan["SpinalCord"].dvh.metric("D0.03cc")            # any metric by name
    protocol = dvheval.load_protocol("bone-sib-30-40-10fx")
    result = dvheval.check_plan(plan, protocol)         # verdicts; result.exit_code is the gate
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dvheval.check import CheckResult, check_plan
    from dvheval.check.courses import check_courses
    from dvheval.engine.combine import Course
    from dvheval.engine.compute import compute_dvhs
    from dvheval.engine.courses import compute_course_dvhs
    from dvheval.engine.dvh import DVH
    from dvheval.engine.metrics import evaluate_metric, parse_metric
    from dvheval.engine.results import PlanDVHs, StructureResult
    from dvheval.protocol import Protocol, load_protocol
    from dvheval.vocab import Verdict

#: Public names and their modules, imported on first use, so that importing
#: dvheval (and ``dvheval --help``) does not load numpy, pydicom or shapely.
_LAZY = {
    "compute_dvhs": "dvheval.engine.compute",
    "compute_course_dvhs": "dvheval.engine.courses",
    "Course": "dvheval.engine.combine",
    "check_courses": "dvheval.check.courses",
    "DVH": "dvheval.engine.dvh",
    "evaluate_metric": "dvheval.engine.metrics",
    "parse_metric": "dvheval.engine.metrics",
    "PlanDVHs": "dvheval.engine.results",
    "StructureResult": "dvheval.engine.results",
    "Verdict": "dvheval.vocab",
    "check_plan": "dvheval.check",
    "CheckResult": "dvheval.check",
    "load_protocol": "dvheval.protocol",
    "Protocol": "dvheval.protocol",
}

__all__ = [
    "DVH",
    "CheckResult",
    "Course",
    "PlanDVHs",
    "Protocol",
    "StructureResult",
    "Verdict",
    "check_courses",
    "check_plan",
    "compute_course_dvhs",
    "compute_dvhs",
    "evaluate_metric",
    "load_protocol",
    "parse_metric",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dvheval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

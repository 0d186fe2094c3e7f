"""DVHs of the cumulative EQD2/BED of treatment courses (see :mod:`dvheval.engine.combine`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dvheval.engine.combine import DEFAULT_ALPHA_BETA, MODELS, Course, load_courses
from dvheval.engine.compute import Loaded, Request, compute_on, read_structures
from dvheval.engine.metrics import parse_metric
from dvheval.engine.results import PlanDVHs
from dvheval.errors import InputError


def compute_course_dvhs(
    courses: Sequence[Course | str | Path],
    models: Sequence[tuple[str, float]],
    structures: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    end_caps: bool = True,
    derive: Mapping[str, str] | Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[tuple[str, float], PlanDVHs]:
    """DVHs of the cumulative EQD2/BED of treatment courses, one set per model and alpha/beta.

    The courses' files are read once; for each ``(model, alpha_beta)`` the
    cumulative grid is built (see :mod:`dvheval.engine.combine`) and every
    structure's DVH computed on it. The DVHs' doses are in Gy EQD2 (or
    BED); metrics are asked without a model (``Dmax``, ``D2cc``).

    Parameters
    ----------
    courses : sequence of Course, str or Path
        One plan each; ``"PATH:RECOVERY"`` sets a recovery factor.
    models : sequence of (str, float)
        ``("EQD2", 2.0)``, ``("BED", 3.0)`` ...
    structures, metrics, end_caps, derive, progress
        As for :func:`compute_dvhs`.

    Returns
    -------
    dict
        ``(model, alpha_beta)`` -> PlanDVHs.

    Raises
    ------
    InputError
        A course that cannot be read or has no fraction count, courses with
        different structure sets or Frames of Reference, a metric with its
        own EQD2/BED model.
    """
    for m in ([metrics] if isinstance(metrics, str) else metrics or []):
        if parse_metric(m).model is not None:
            raise InputError(f"metric {m!r}: the dose of courses is already cumulative EQD2 or "
                             "BED; ask the metric without a model (choose a/b with "
                             "--alpha-beta, the quantity with --dose-model)")
    loaded = load_courses(courses)
    out: dict[tuple[str, float], PlanDVHs] = {}
    for model, ab in dict.fromkeys((str(m).upper(), float(a)) for m, a in models):
        combined = loaded.cumulative(model, ab)
        sset = read_structures(loaded.inputs.structure_set.path, combined.dose, combined.plan)
        here = Loaded(combined.dose, sset, combined.plan, combined.findings,
                      combined.isocenters, combined.no_fraction_models)
        warnings = [f"{p}: {why}" for p, why in loaded.inputs.ignored
                    if "not an RT object" not in why]
        out[(model, ab)] = compute_on(here, Request(structures, metrics, end_caps, None, None,
                                                     derive, progress), warnings)
    return out


def course_call(paths: list[Any], courses: Sequence[Course | str | Path],
                structures: str | Sequence[str] | None, metrics: str | Sequence[str] | None,
                end_caps: bool, prescription_gy: float | None, fractions: int | None,
                derive: Mapping[str, str] | Sequence[str] | None,
                progress: Callable[[int, int, str], None] | None, alpha_beta: float | None,
                dose_model: str) -> PlanDVHs:
    """:func:`~dvheval.engine.compute.compute_dvhs` with ``courses``: the one cumulative
    dose asked for (``paths`` must be empty)."""
    if paths:
        raise InputError("give either the files of one plan (or of plans to --sum) or "
                         "--course for each course, not both")
    if prescription_gy is not None or fractions is not None:
        raise InputError("--rx and --fractions do not apply to courses: each course's "
                         "RTPLAN gives its fractions, and the cumulative dose is EQD2/BED, "
                         "not relative to one prescription")
    model = str(dose_model).upper()
    if model not in MODELS:
        raise InputError(f"unknown dose model {dose_model!r}; {' or '.join(MODELS)}")
    ab = DEFAULT_ALPHA_BETA if alpha_beta is None else float(alpha_beta)
    if not (math.isfinite(ab) and ab > 0):
        raise InputError(f"alpha/beta must be a positive number of Gy, not {alpha_beta}")
    return compute_course_dvhs(courses, [(model, ab)], structures, metrics, end_caps, derive,
                               progress)[(model, ab)]

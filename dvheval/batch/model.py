"""The data of a batch run: options, tasks, worker results, the run summary.

Everything here is plain and picklable: a :class:`PlanTask` and
:class:`EvalOptions` go to a worker process, a :class:`WorkerResult` comes
back, a :class:`BatchSummary` describes the whole run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dvheval.batch.store import NotPassed, PlanRecord
from dvheval.errors import DvhevalError

if TYPE_CHECKING:
    from dvheval.dicom.discover import Problem

#: Default time limit of one plan's evaluation, in seconds.
DEFAULT_TIMEOUT = 600.0


class BatchUsageError(DvhevalError):
    """The batch cannot start: bad folder, protocol, option or scheduler."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run stops as on Ctrl-C (exit code 143 instead of 130)."""


@dataclass(frozen=True)
class EvalOptions:
    """Options of the evaluation that enter the resume fingerprint.

    Attributes
    ----------
    rx_overrides : tuple of (str, float)
        Prescription dose (Gy) per protocol level, instead of the protocol's.
    fractions : int or None
        Number of fractions instead of the protocol's.
    end_caps : bool
        Extend each structure half a slice beyond its end contours.
    conditions : tuple of str
        Protocol conditions asserted for every plan (activate alternatives).
    acceptable_fails_gate : bool
        An ACCEPTABLE plan gets exit code 1 (counts as failing).
    strict : tuple of str
        Integrity check ids whose warnings close the gate (``"all"``: every one).
    """

    rx_overrides: tuple[tuple[str, float], ...] = ()
    fractions: int | None = None
    end_caps: bool = True
    conditions: tuple[str, ...] = ()
    acceptable_fails_gate: bool = False
    strict: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form (stored with the run, hashed into the fingerprint)."""
        out: dict[str, Any] = {"rx": dict(self.rx_overrides), "fractions": self.fractions,
                               "end_caps": self.end_caps, "conditions": sorted(self.conditions),
                               "acceptable_fails_gate": self.acceptable_fails_gate}
        if self.strict:  # left out when empty: fingerprints of earlier runs stay valid
            out["strict"] = sorted(self.strict)
        return out


@dataclass(frozen=True)
class PlanTask:
    """What a worker needs to evaluate one plan: its key and files."""

    key: str
    paths: tuple[str, ...]


@dataclass
class WorkerResult:
    """What a worker sends back for one plan.

    Attributes
    ----------
    key : str
    ok : bool
    record : PlanRecord or None
        Rows for :meth:`dvheval.batch.store.ResultStore.write_plan` when ``ok``.
    sha256 : dict
        path -> SHA-256 of the files the worker read.
    error_kind, error_type, message, traceback : str or None
        Why the plan could not be evaluated when not ``ok``.
    seconds : float
    worker : str
        ``host:pid``.
    maxrss_kb : int or None
        Peak resident memory of the worker process so far (kB).
    """

    key: str
    ok: bool
    record: PlanRecord | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    error_kind: str | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    worker: str = ""
    maxrss_kb: int | None = None


#: A worker function: evaluates one plan, never raises for a problem of the plan.
Evaluator = Callable[[PlanTask, Any, EvalOptions], WorkerResult]


def died_result(task: PlanTask) -> WorkerResult:
    """The error of a plan whose worker process died again when it ran alone."""
    return WorkerResult(task.key, False, error_kind="worker_died", error_type="BrokenProcessPool",
                        message="the worker process died while evaluating this plan (crash, "
                                "out of memory or killed); it died again when run alone")


def timeout_result(task: PlanTask, limit: float) -> WorkerResult:
    """The error of a plan that ran over the time limit of ``limit`` seconds."""
    return WorkerResult(task.key, False, error_kind="timeout", error_type="Timeout",
                        message=f"the evaluation took longer than the time limit of {limit:g} s "
                                "(--timeout); its worker process was killed")


def failed_result(task: PlanTask, exc: BaseException, kind: str = "exception") -> WorkerResult:
    """The error of a plan whose evaluation raised ``exc`` (with its traceback)."""
    return WorkerResult(task.key, False, error_kind=kind, error_type=type(exc).__name__,
                        message=f"{type(exc).__name__}: {exc}",
                        traceback="".join(traceback.format_exception(exc)))




class ProgressSink(Protocol):
    """Receives progress events of a batch run."""

    def start(self, total: int) -> None:
        """Evaluation of ``total`` plans begins."""

    def advance(self, outcome: str) -> None:
        """One plan finished; ``outcome`` is its verdict or ``"ERROR"``."""

    def stop(self) -> None:
        """The run ended."""


@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes
    ----------
    run_id : int
    db : Path
    protocol : dict
        Name, version, SHA-256 and file of the protocol.
    found : int
        Plans discovered.
    evaluated : int
        Plans evaluated in this run.
    skipped : int
        Plans skipped because the database already held them.
    errors : list of (plan key, patient id, message)
        Plans that could not be evaluated in this run.
    verdicts : dict
        Plan verdict -> number of plans, over evaluated and skipped plans.
    failing_plans : int
        Evaluated or skipped plans with a non-zero exit code.
    problems : list of Problem
        Discovery problems.
    files : dict
        Discovery file counts.
    discovery_seconds, evaluation_seconds : float
    worker_peak_kb : dict
        Worker (``host:pid``) -> peak resident memory in kB.
    interrupted : bool
    not_passed : list of NotPassed
        Plans whose verdict is not PASS (see
        :meth:`dvheval.batch.store.ResultStore.not_passed`).
    """

    run_id: int
    db: Path
    protocol: dict[str, Any]
    found: int = 0
    evaluated: int = 0
    skipped: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    failing_plans: int = 0
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    discovery_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    worker_peak_kb: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    not_passed: list[NotPassed] = field(default_factory=list)

    @property
    def blocking_problems(self) -> list[Problem]:
        """Discovery problems of severity ``error`` (doses that could not be evaluated)."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def exit_code(self) -> int:
        """0 when every plan passed the gate and no dose was left out; else 1."""
        if self.interrupted or self.errors or self.failing_plans or self.blocking_problems:
            return 1
        return 0



"""Find the plans in a folder tree of DICOM-RT exports.

Only headers are read (``stop_before_pixels`` and the few attributes needed),
so an archive of thousands of plans is indexed in seconds. Files are grouped
into plans by their UIDs, whatever the folder layout or file names:

* an RTDOSE belongs to the RTPLAN named in its ReferencedRTPlanSequence;
  every dose of one RTPLAN forms one plan entry (e.g. the BEAM doses of a
  plan are summed);
* the structure set is the one the RTPLAN names in its
  ReferencedStructureSetSequence;
* when a reference is missing or points to a file that is not in the tree,
  the structure set is looked up by the dose's Frame of Reference UID and
  Patient ID, and used only when exactly one structure set matches.

Nothing is guessed: a dose that no structure set matches is an
``orphan_dose``; a dose whose Frame of Reference matches several structure
sets, several PLAN doses for one RTPLAN, or two different files with one
SOPInstanceUID are ``conflict`` problems, and such doses are not evaluated.
Identical copies of a file (same SOPInstanceUID, same bytes) are used once
and reported as ``duplicate``. Files that are not DICOM or cannot be read are
counted and listed.

Problem kinds and severities
----------------------------
==========================  ========  ==========================================
kind                        severity  meaning
==========================  ========  ==========================================
``orphan_dose``             error     an RTDOSE with no structure set
``conflict``                error     doses that could be paired more than one
                                      way, or one UID with different contents
``unpaired_beam_dose``      error     a BEAM dose without an RTPLAN reference
                                      (which beams form the plan is unknown)
``unreadable``              warning   DICOM file whose header cannot be read, a
                                      file named .dcm that is not DICOM, or a
                                      broken symbolic link or link loop
``not_a_file``              warning   a FIFO (named pipe), socket or device: never
                                      opened
``orphan_structure_set``    warning   an RTSTRUCT that no dose uses
``orphan_plan``             warning   an RTPLAN that no dose references
``non_dicom``               info      not a DICOM file
``duplicate``               info      identical copies of one SOPInstanceUID
``superseded_dose``         info      BEAM/FRACTION doses not used because the
                                      PLAN dose of the same RTPLAN is present
==========================  ========  ==========================================

Severity ``error`` marks dose files that could not be evaluated.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dvheval.dicom.files import (
    HEADER_TAGS,
    DicomHeader,
    named_as_dicom,
    read_header,
    regular_file_stat,
    sha256_of,
    walk,
)
from dvheval.errors import InputError

__all__ = ["HEADER_TAGS", "SEVERITY", "DicomHeader", "Discovery", "PlanGroup", "Problem",
           "discover", "read_header", "regular_file_stat", "walk_files"]

#: Severity of each problem kind.
SEVERITY = {
    "orphan_dose": "error",
    "conflict": "error",
    "unpaired_beam_dose": "error",
    "unreadable": "warning",
    "not_a_file": "warning",
    "orphan_structure_set": "warning",
    "orphan_plan": "warning",
    "non_dicom": "info",
    "duplicate": "info",
    "superseded_dose": "info",
}

#: Dose summation types that hold the whole plan's dose.
PLAN_SUMMATIONS = ("PLAN", "MULTI_PLAN", "RECORD")
#: Dose summation types that are parts of a plan and need an RTPLAN reference to be grouped.
PART_SUMMATIONS = ("BEAM", "BRACHY", "CONTROL_POINT")


@dataclass(frozen=True)
class Problem:
    """Something in the archive that was not evaluated, or was resolved by a rule.

    Attributes
    ----------
    kind : str
        One of the keys of :data:`SEVERITY`.
    reason : str
        What is wrong, in words.
    files : tuple of str
        The files concerned.
    patient_id : str
        Patient ID when known.
    """

    kind: str
    reason: str
    files: tuple[str, ...] = ()
    patient_id: str = ""

    @property
    def severity(self) -> str:
        """``"error"``, ``"warning"`` or ``"info"``."""
        return SEVERITY.get(self.kind, "warning")


@dataclass(frozen=True)
class PlanGroup:
    """The files of one plan to evaluate.

    Attributes
    ----------
    key : str
        Stable identifier: the RTPLAN SOPInstanceUID (also when only the
        doses reference it and the RTPLAN file is absent), else the
        SOPInstanceUID of the single dose.
    key_source : str
        ``"rtplan"`` (RTPLAN present), ``"rtplan_reference"`` (referenced by
        the doses, file absent) or ``"rtdose"``.
    patient_id : str
        The dose's Patient ID.
    structure_set : DicomHeader
    doses : tuple of DicomHeader
        One PLAN dose, or the BEAM/FRACTION doses to be summed.
    plan : DicomHeader or None
    structure_set_by : str
        ``"reference"`` (named by the RTPLAN) or ``"frame_of_reference"``.
    notes : tuple of str
        How the plan was assembled when a rule was applied.
    """

    key: str
    key_source: str
    patient_id: str
    structure_set: DicomHeader
    doses: tuple[DicomHeader, ...]
    plan: DicomHeader | None = None
    structure_set_by: str = "reference"
    notes: tuple[str, ...] = ()

    @property
    def files(self) -> list[DicomHeader]:
        """Structure set, RTPLAN (when present) and doses, in that order."""
        return [self.structure_set, *([self.plan] if self.plan else []), *self.doses]

    @property
    def paths(self) -> list[str]:
        """The paths of :attr:`files` as strings."""
        return [str(f.path) for f in self.files]


@dataclass
class Discovery:
    """Result of :func:`discover`.

    Attributes
    ----------
    roots : list of Path
    groups : list of PlanGroup
        Sorted by patient ID and key.
    problems : list of Problem
    counts : dict of str to int
        ``files`` (seen), ``dicom`` (readable DICOM), ``rt`` (RTDOSE,
        RTSTRUCT, RTPLAN after removing duplicates), ``other_dicom``,
        ``non_dicom``, ``unreadable`` (also broken symbolic links and link
        loops), ``not_a_file`` (FIFOs, sockets, devices: never opened; only
        when there are any),
        ``duplicates`` (extra copies), ``plans``.
    seconds : float
        Wall time of the discovery.
    """

    roots: list[Path]
    groups: list[PlanGroup]
    problems: list[Problem]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def problem_counts(self) -> dict[str, int]:
        """Number of problems of each kind."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out


def walk_files(roots: Iterable[str | Path], errors: list[OSError] | None = None
               ) -> Iterable[Path]:
    """Every file below the roots (and roots that are files), sorted.

    :func:`dvheval.dicom.files.walk`; a root that does not exist is
    refused as ``"no such folder"``.

    Raises
    ------
    InputError
        If a root does not exist.
    """
    return walk(roots, errors, missing="no such folder")


# ----------------------------------------------------------------- grouping
class _Grouper:
    """Pairs doses with plans and structure sets; collects problems."""

    def __init__(self, headers: list[DicomHeader], problems: list[Problem]) -> None:
        self.problems = problems
        self.used: set[str] = set()  # UIDs in a plan entry or named in a problem
        self.conflicted: set[str] = set()
        self.conflicted_for: set[tuple[str, str]] = set()
        unique = self._deduplicate(headers)
        self.doses = [h for h in unique if h.kind == "RTDOSE"]
        self.plans = {h.sop_instance_uid: h for h in unique if h.kind == "RTPLAN"}
        self.ssets = {h.sop_instance_uid: h for h in unique if h.kind == "RTSTRUCT"}
        self.ss_by_for: dict[tuple[str, str], list[DicomHeader]] = defaultdict(list)
        for ss in self.ssets.values():
            for for_uid in ss.frame_of_reference_uids:
                self.ss_by_for[(ss.patient_id, for_uid)].append(ss)

    def problem(self, kind: str, reason: str, files: Iterable[DicomHeader],
                patient_id: str = "") -> None:
        files = list(files)
        if kind != "duplicate":
            self.used.update(f.sop_instance_uid for f in files)
        self.problems.append(Problem(kind, reason, tuple(str(f.path) for f in files),
                                     patient_id or (files[0].patient_id if files else "")))

    def _deduplicate(self, headers: list[DicomHeader]) -> list[DicomHeader]:
        by_uid: dict[str, list[DicomHeader]] = defaultdict(list)
        for h in headers:
            by_uid[h.sop_instance_uid].append(h)
        unique = []
        for uid, copies in by_uid.items():
            if len(copies) == 1:
                unique.append(copies[0])
                continue
            digests = {sha256_of(c.path) for c in copies}
            kinds = {c.kind for c in copies}
            if len(digests) == 1 and len(kinds) == 1:
                unique.append(copies[0])
                self.problem("duplicate", f"{len(copies)} identical copies of {copies[0].kind} "
                             f"{uid}; {copies[0].path} is used", copies)
            else:
                self.conflicted.add(uid)
                self.conflicted_for.update((c.patient_id, f) for c in copies
                                           for f in c.frame_of_reference_uids)
                self.problem("conflict", f"{len(copies)} different files carry the "
                             f"SOPInstanceUID {uid}; none is used", copies)
        return unique

    def structure_set_for(
        self, doses: list[DicomHeader], plan: DicomHeader | None, notes: list[str]
    ) -> tuple[DicomHeader | None, str]:
        """The structure set of a plan entry, or None after recording a problem."""
        if plan is not None:
            for ref in plan.referenced_structure_set_uids:
                if ref in self.conflicted:
                    self.problem("conflict", f"the RTPLAN names structure set {ref}, which "
                                 "has conflicting copies", [plan, *doses])
                    return None, ""
                if ref in self.ssets:
                    return self.ssets[ref], "reference"
            if plan.referenced_structure_set_uids:
                notes.append(f"the RTPLAN names structure set "
                             f"{plan.referenced_structure_set_uids[0]}, which is not in the "
                             "archive; structure set found by Frame of Reference")
        fors = {d.frame_of_reference_uid for d in doses}
        patients = {d.patient_id for d in doses}
        if len(fors) > 1 or len(patients) > 1:
            self.problem("conflict", "the doses of one plan differ in Frame of Reference or "
                         "Patient ID", [*doses, *([plan] if plan else [])])
            return None, ""
        for_uid, patient = fors.pop(), patients.pop()
        candidates = self.ss_by_for.get((patient, for_uid), []) if for_uid else []
        if len(candidates) == 1:
            if plan is None or not plan.referenced_structure_set_uids:
                notes.append("no structure set reference; structure set found by Frame of "
                             "Reference and Patient ID")
            return candidates[0], "frame_of_reference"
        files = [*doses, *([plan] if plan else [])]
        if (patient, for_uid) in self.conflicted_for:
            self.problem("conflict", f"the structure set sharing the dose's Frame of Reference "
                         f"{for_uid} has conflicting copies", files)
        elif candidates:
            self.problem(
                "conflict",
                f"{len(candidates)} structure sets share the dose's Frame of Reference "
                f"{for_uid} (patient {patient!r}); which one belongs to the dose is unknown",
                [*files, *candidates])
        else:
            why = "no structure set references or shares its Frame of Reference " + (
                f"{for_uid}" if for_uid else "(the dose has none)") + f" (patient {patient!r})"
            self.problem("orphan_dose", why, files)
        return None, ""

    def group(self) -> list[PlanGroup]:
        by_plan: dict[str, list[DicomHeader]] = defaultdict(list)
        single: list[DicomHeader] = []
        for d in self.doses:
            refs = d.referenced_plan_uids
            if len(refs) == 1:
                by_plan[refs[0]].append(d)
            elif d.summation_type in PART_SUMMATIONS:
                self.problem("unpaired_beam_dose", f"{d.summation_type} dose without a single "
                             "RTPLAN reference: which doses form the plan is unknown", [d])
            else:
                single.append(d)
        groups = []
        for ref, doses in by_plan.items():
            g = self._plan_entry(ref, doses)
            if g is not None:
                groups.append(g)
        for d in single:
            notes: list[str] = []
            ss, by = self.structure_set_for([d], None, notes)
            if ss is not None:
                groups.append(PlanGroup(d.sop_instance_uid, "rtdose", d.patient_id, ss, (d,),
                                        None, by, tuple(notes)))
        for g in groups:
            self.used.update(f.sop_instance_uid for f in g.files)
        for kind, table in (("orphan_structure_set", self.ssets), ("orphan_plan", self.plans)):
            what = "structure set" if kind == "orphan_structure_set" else "RTPLAN"
            for uid, h in table.items():
                if uid not in self.used:
                    self.problem(kind, f"no dose uses this {what}", [h])
        return sorted(groups, key=lambda g: (g.patient_id, g.key))

    def _plan_entry(self, ref: str, doses: list[DicomHeader]) -> PlanGroup | None:
        if ref in self.conflicted:
            self.problem("conflict", f"the doses reference RTPLAN {ref}, which has "
                         "conflicting copies", doses)
            return None
        plan = self.plans.get(ref)
        notes: list[str] = []
        whole = [d for d in doses if d.summation_type in PLAN_SUMMATIONS]
        if len(whole) > 1:
            named = [self.ssets[u] for u in (plan.referenced_structure_set_uids if plan else ())
                     if u in self.ssets]
            self.problem("conflict", f"{len(whole)} plan doses reference RTPLAN {ref}; which "
                         "one to evaluate is unknown",
                         [*doses, *([plan] if plan else []), *named])
            return None
        if whole and len(doses) > 1:
            parts = [d for d in doses if d is not whole[0]]
            self.problem("superseded_dose", f"the {whole[0].summation_type} dose "
                         f"{whole[0].path} of RTPLAN {ref} is used; these "
                         f"{len(parts)} partial doses are not added to it", parts)
            notes.append(f"{len(parts)} partial dose(s) of the same RTPLAN not used")
            doses = whole
        if plan is None:
            notes.append(f"RTPLAN {ref} is not in the archive")
        ss, by = self.structure_set_for(doses, plan, notes)
        if ss is None:
            return None
        if plan is not None and ss.patient_id != doses[0].patient_id:
            notes.append(f"Patient ID of the structure set ({ss.patient_id!r}) differs from "
                         f"the dose's ({doses[0].patient_id!r})")
        return PlanGroup(ref, "rtplan" if plan else "rtplan_reference", doses[0].patient_id,
                         ss, tuple(doses), plan, by, tuple(notes))


def discover(roots: str | Path | Iterable[str | Path]) -> Discovery:
    """Find and group the DICOM-RT plans below one or more folders.

    Parameters
    ----------
    roots : str, Path or iterable of them
        Folders (searched recursively) and/or files.

    Returns
    -------
    Discovery
        Plan entries, problems and file counts.

    Raises
    ------
    InputError
        If a root does not exist.
    """
    t0 = time.perf_counter()
    paths = [Path(r) for r in ([roots] if isinstance(roots, str | Path) else roots)]
    counts = dict.fromkeys(("files", "dicom", "rt", "other_dicom", "non_dicom", "unreadable",
                            "duplicates", "plans"), 0)
    problems: list[Problem] = []
    headers: list[DicomHeader] = []
    walk_errors: list[OSError] = []
    for path in walk_files(paths, walk_errors):
        counts["files"] += 1
        try:
            h = read_header(path)
        except InputError as exc:
            kind = {"DICM": "non_dicom", "not_a_file": "not_a_file"}.get(exc.attribute or "",
                                                                         "unreadable")
            if kind == "non_dicom" and named_as_dicom(path):
                kind = "unreadable"  # a damaged .dcm file may be part of a plan
            counts[kind] = counts.get(kind, 0) + 1
            problems.append(Problem(kind, exc.message, (str(path),)))
            continue
        counts["dicom"] += 1
        if h.kind == "OTHER":
            counts["other_dicom"] += 1
        else:
            headers.append(h)
    for err in walk_errors:
        counts["unreadable"] += 1
        problems.append(Problem("unreadable", f"cannot list the folder ({err.strerror or err})",
                                (str(err.filename),)))
    grouper = _Grouper(headers, problems)
    groups = grouper.group()
    counts["duplicates"] = sum(len(p.files) - 1 for p in problems if p.kind == "duplicate")
    counts["rt"] = len(headers) - counts["duplicates"]
    counts["plans"] = len(groups)
    return Discovery(paths, groups, problems, counts, time.perf_counter() - t0)

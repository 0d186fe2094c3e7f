"""Finding DICOM files and reading their headers.

One walker and one header reader serve both the loading of one plan
(:func:`expand_paths`, :func:`find_inputs`) and archive discovery
(:mod:`dvheval.dicom.discover`), so both skip the same entries: hidden files
and folders (names starting with ``.``) are never visited, and named pipes,
sockets, devices and broken symbolic links are recognised from ``stat``
alone and never opened. Files are classified by their SOP Class UID
(falling back to Modality), never by name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from dvheval.errors import InputError

RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
RTPLAN_SOPS = {
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
}
_KIND_BY_SOP = {RTDOSE_SOP: "RTDOSE", RTSTRUCT_SOP: "RTSTRUCT",
                **dict.fromkeys(RTPLAN_SOPS, "RTPLAN")}
_KIND_BY_MODALITY = {"RTDOSE": "RTDOSE", "RTSTRUCT": "RTSTRUCT", "RTPLAN": "RTPLAN"}

#: Attributes read from each file's header.
HEADER_TAGS = (
    "SOPClassUID",
    "Modality",
    "SOPInstanceUID",
    "PatientID",
    "FrameOfReferenceUID",
    "ReferencedRTPlanSequence",
    "ReferencedStructureSetSequence",
    "ReferencedFrameOfReferenceSequence",
    "DoseSummationType",
    "StructureSetLabel",
    "RTPlanLabel",
)

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def rt_kind(sop_class_uid: str, modality: str) -> str:
    """The kind of an object by its SOP Class UID, else by its Modality.

    Returns
    -------
    str
        ``"RTDOSE"``, ``"RTSTRUCT"``, ``"RTPLAN"`` (RT Plan or RT Ion Plan) or
        ``"OTHER"``.
    """
    return _KIND_BY_SOP.get(sop_class_uid) or _KIND_BY_MODALITY.get(modality.upper(), "OTHER")


# ------------------------------------------------------------------ walking
def walk(roots: Iterable[str | Path], errors: list[OSError] | None = None,
         missing: str = "no such file or folder") -> Iterator[Path]:
    """Every file below the roots, and the roots that are not folders, sorted.

    Hidden files and folders (name starting with ``.``) below a root are
    skipped; symbolic links to folders are not followed. Every other entry
    is yielded, FIFOs, sockets, devices and broken links included: check it
    with :func:`regular_file_stat` before opening it.

    Parameters
    ----------
    roots : iterable of str or Path
    errors : list, optional
        Receives the errors of folders that cannot be listed (permissions...);
        without it they are ignored.
    missing : str
        Message of the error raised for a root that does not exist.

    Raises
    ------
    InputError
        If a root does not exist (a broken symbolic link is yielded).
    """
    for root in roots:
        root = Path(root)
        if root.is_dir():
            onerror = errors.append if errors is not None else None
            for here, dirs, files in os.walk(root, onerror=onerror):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(here) / name
        elif root.exists() or root.is_symlink():
            yield root  # a FIFO or device given as a root is checked, never opened
        else:
            raise InputError(missing, root)


def _unfollowable(path: Path, exc: OSError) -> str:
    """Why ``stat`` of ``path`` failed, in words."""
    if not path.is_symlink():
        return f"cannot be read ({exc.strerror or exc})"
    if exc.errno in (errno.ENOENT, errno.ELOOP):
        return "a broken symbolic link or a link loop"
    return f"a symbolic link that cannot be followed ({exc.strerror or exc})"


def regular_file_stat(path: str | Path) -> os.stat_result:
    """``stat`` of a path that must be a regular file (symbolic links followed).

    Nothing is opened: a FIFO, socket or device is refused from its
    ``stat`` alone, since opening or reading one can block for ever.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    os.stat_result

    Raises
    ------
    InputError
        ``attribute`` is ``"not_a_file"`` for a FIFO, socket, device or
        folder; ``None`` for a path that cannot be followed (broken symbolic
        link, link loop, no permission, vanished). :func:`not_regular_reason`
        gives the reason without the error.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{_unfollowable(path, exc)}; skipped", path) from exc
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _SPECIAL_KINDS if test(st.st_mode)),
                    "not a regular file")
        raise InputError(f"{what}, not a regular file; never opened", path, "not_a_file")
    return st


def not_regular_reason(path: Path) -> str | None:
    """Why ``path`` is not a regular file that can be read without blocking, or None.

    Only ``stat`` is used: opening a FIFO, socket or device can block for ever.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _unfollowable(path, exc)
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _SPECIAL_KINDS if test(mode)), "not a regular file")


# ------------------------------------------------------------------ headers
@dataclass(frozen=True)
class DicomHeader:
    """What the header of one DICOM file says.

    Attributes
    ----------
    path : Path
        The file.
    kind : str
        ``"RTDOSE"``, ``"RTSTRUCT"``, ``"RTPLAN"`` or ``"OTHER"`` (any other
        DICOM object, e.g. CT images).
    sop_instance_uid, sop_class_uid, patient_id : str
        From the header ('' when absent).
    frame_of_reference_uids : tuple of str
        The file's FrameOfReferenceUID and, for a structure set, those of its
        ReferencedFrameOfReferenceSequence.
    referenced_plan_uids : tuple of str
        RTDOSE: the RTPLANs of its ReferencedRTPlanSequence.
    referenced_structure_set_uids : tuple of str
        RTPLAN: the structure sets of its ReferencedStructureSetSequence.
    summation_type : str
        RTDOSE: DoseSummationType (upper case, '' when absent).
    label : str
        StructureSetLabel or RTPlanLabel.
    size : int
        File size in bytes.
    mtime_ns : int
        Modification time in nanoseconds.
    """

    path: Path
    kind: str
    sop_instance_uid: str
    sop_class_uid: str = ""
    patient_id: str = ""
    frame_of_reference_uids: tuple[str, ...] = ()
    referenced_plan_uids: tuple[str, ...] = ()
    referenced_structure_set_uids: tuple[str, ...] = ()
    summation_type: str = ""
    label: str = ""
    size: int = 0
    mtime_ns: int = 0

    @property
    def frame_of_reference_uid(self) -> str:
        """The first Frame of Reference UID ('' when there is none)."""
        return self.frame_of_reference_uids[0] if self.frame_of_reference_uids else ""


def _uids(seq: Any, keyword: str) -> tuple[str, ...]:
    if not seq:
        return ()
    return tuple(str(item.get(keyword, "") or "") for item in seq if item.get(keyword))


def _header_dataset(path: Path) -> pydicom.Dataset:
    """The attributes of :data:`HEADER_TAGS`, pixel data never read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True,
                                   specific_tags=list(HEADER_TAGS))
    except InvalidDicomError as exc:
        raise InputError("not a DICOM file (no DICM header)", path, "DICM") from exc
    except Exception as exc:  # pydicom raises many types on damaged files
        detail = str(exc).split(" To replace this error")[0] or "no detail"
        raise InputError(f"cannot read the DICOM header; the file is damaged or cut short "
                         f"({detail})", path) from exc


def read_header(path: str | Path) -> DicomHeader:
    """Read the header of one file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    DicomHeader

    Raises
    ------
    InputError
        ``attribute`` is ``"DICM"`` when the file is not DICOM (the message
        starts with ``"not a DICOM file"``), ``"not_a_file"`` for a FIFO,
        socket or device (never opened), else the path cannot be followed,
        or the file is DICOM but its header cannot be read or lacks the SOP
        UIDs (e.g. a truncated file).
    """
    path = Path(path)
    st = regular_file_stat(path)
    ds = _header_dataset(path)
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if not sop_uid or not (sop_class or modality):
        raise InputError("the header lacks SOPInstanceUID or SOPClassUID (truncated file?)",
                         path, "SOPClassUID" if sop_uid else "SOPInstanceUID")
    kind = rt_kind(sop_class, modality)
    fors = [str(ds.get("FrameOfReferenceUID", "") or "")]
    if kind == "RTSTRUCT":
        fors += _uids(ds.get("ReferencedFrameOfReferenceSequence"), "FrameOfReferenceUID")
    label = ds.get("StructureSetLabel") if kind == "RTSTRUCT" else ds.get("RTPlanLabel")
    return DicomHeader(
        path=path,
        kind=kind,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        patient_id=str(ds.get("PatientID", "") or ""),
        frame_of_reference_uids=tuple(dict.fromkeys(f for f in fors if f)),
        referenced_plan_uids=_uids(ds.get("ReferencedRTPlanSequence"),
                                   "ReferencedSOPInstanceUID") if kind == "RTDOSE" else (),
        referenced_structure_set_uids=_uids(ds.get("ReferencedStructureSetSequence"),
                                            "ReferencedSOPInstanceUID")
        if kind == "RTPLAN" else (),
        summation_type=str(ds.get("DoseSummationType", "") or "").upper()
        if kind == "RTDOSE" else "",
        label=str(label or ""),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )


def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------ one plan
@dataclass(frozen=True)
class DicomFile:
    """A file and the kind of object it holds (RTDOSE, RTSTRUCT, RTPLAN, OTHER)."""

    path: Path
    kind: str
    sop_instance_uid: str = ""


def classify(path: str | Path) -> DicomFile:
    """Read only the header of ``path`` and say what it holds.

    Raises
    ------
    InputError
        If the file is not a regular file, not DICOM or cannot be read (see
        :func:`read_header`).
    """
    header = read_header(path)
    return DicomFile(header.path, header.kind, header.sop_instance_uid)


def expand_paths(paths: Iterable[str | Path],
                 skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files named directly plus every regular file below named folders (sorted).

    Hidden files and folders (names starting with ``.``) are left out, as in
    archive discovery. Entries of a folder that are not regular files (named
    pipes, sockets, devices, broken links) are never opened: they are listed
    in ``skipped`` with the reason.

    Raises
    ------
    InputError
        A path given directly does not exist or is not a regular file or folder.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        direct = not p.is_dir()
        for path in walk([p]):
            why = not_regular_reason(path)
            if why is None:
                out.append(path)
            elif direct:
                raise InputError(f"{why}, not a DICOM file", path)
            elif skipped is not None:
                skipped.append((path, f"{why}: skipped"))
    return out


def named_as_dicom(path: str | Path) -> bool:
    """True for a file whose name says it is DICOM (``.dcm``, ``.dicom``, any case)."""
    return Path(path).suffix.lower() in (".dcm", ".dicom")


@dataclass
class InputSet:
    """The RT files of one plan, sorted by kind."""

    doses: list[DicomFile]
    structure_set: DicomFile
    plan: DicomFile | None
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    #: Every RTPLAN found (``plan`` is the one when there is exactly one);
    #: several only when :func:`find_inputs` was asked to allow them.
    plans: list[DicomFile] = field(default_factory=list)
    #: Identical copies of a file found more than once (the same file given twice,
    #: or the same object exported into two folders) and counted once.
    copies: list[DicomFile] = field(default_factory=list)


def find_inputs(paths: str | Path | Iterable[str | Path],
                several_plans: bool = False) -> InputSet:
    """Classify the given files and folders into one plan's RT objects.

    Files given directly must be DICOM; files inside folders that are not
    DICOM at all are listed in ``ignored`` with the reason, while a DICOM
    file whose header cannot be read, or a file named ``*.dcm`` that is not
    DICOM, is an error (it may be a damaged part of the plan). Exactly one
    RTSTRUCT and at least one RTDOSE are needed; several RTSTRUCT objects
    are ambiguous. Several RTPLAN objects are
    refused with a list of the plans (label, prescription, fractions, file)
    unless ``several_plans`` is true (a plan sum or treatment courses, see
    :mod:`dvheval.dicom.plan_sum`); with several RTPLANs, identical copies
    of one object (same SOP Instance UID and bytes, e.g. the structure set
    exported with each plan) count once.

    Raises
    ------
    InputError
        On missing or ambiguous objects, listing the candidates.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    direct = {Path(p) for p in paths if not Path(p).is_dir()}
    found: dict[str, list[DicomFile]] = {"RTDOSE": [], "RTSTRUCT": [], "RTPLAN": []}
    ignored: list[tuple[Path, str]] = []
    for f in expand_paths(paths, ignored):
        try:
            info = classify(f)
        except InputError as exc:
            if f in direct or exc.attribute != "DICM":
                raise
            if named_as_dicom(f):
                raise InputError(f"{exc.message}; a file named like a DICOM file in the plan's "
                                 "folder may be a damaged part of the plan: repair or remove it",
                                 f, exc.attribute) from exc
            ignored.append((f, exc.message))
            continue
        if info.kind in found:
            found[info.kind].append(info)
        else:
            ignored.append((f, "not an RT object (ignored)"))
    copies: list[DicomFile] = []
    if len(found["RTPLAN"]) > 1:
        found = {kind: _without_copies(files, copies) for kind, files in found.items()}
    inputs = _one_plan(found, ignored, ", ".join(str(p) for p in paths), several_plans)
    inputs.copies.extend(copies)
    return inputs


def _without_copies(files: list[DicomFile], copies: list[DicomFile]) -> list[DicomFile]:
    """The files with identical copies (same SOP Instance UID and bytes) counted once;
    the copies left out are added to ``copies``. Only files whose UID occurs
    more than once are hashed."""
    times = Counter(f.sop_instance_uid for f in files)
    out: list[DicomFile] = []
    seen: dict[str, str] = {}
    for f in files:
        uid = f.sop_instance_uid
        if times[uid] > 1:
            digest = sha256_of(f.path)
            if seen.get(uid) == digest:
                copies.append(f)
                continue
            seen.setdefault(uid, digest)
        out.append(f)
    return out


def _one_plan(found: dict[str, list[DicomFile]], ignored: list[tuple[Path, str]],
              where: str, several_plans: bool = False) -> InputSet:
    """The InputSet of the classified files, or an error naming the ambiguity."""
    if not found["RTSTRUCT"]:
        raise InputError(f"no RTSTRUCT (structure set) found in {where}")
    if len(found["RTSTRUCT"]) > 1:
        cands = "\n  ".join(str(f.path) for f in found["RTSTRUCT"])
        raise InputError(
            f"{len(found['RTSTRUCT'])} structure sets found; give exactly one:\n  {cands}"
        )
    if not found["RTDOSE"]:
        raise InputError(f"no RTDOSE found in {where}")
    if len(found["RTPLAN"]) > 1 and not several_plans:
        from dvheval.dicom.plan import describe_plans

        raise InputError(
            f"{len(found['RTPLAN'])} RT plans found in {where}: "
            + describe_plans([f.path for f in found["RTPLAN"]])
            + "; give --sum to evaluate the sum of their doses (one structure set and Frame "
            "of Reference), --course PATH for each of courses of different fractionation, or "
            "the files of one plan only")
    plan = found["RTPLAN"][0] if len(found["RTPLAN"]) == 1 else None
    return InputSet(found["RTDOSE"], found["RTSTRUCT"][0], plan, ignored,
                    list(found["RTPLAN"]))

"""Reading DICOM-RT files: RTDOSE grids, RTSTRUCT contours, RTPLAN prescriptions.

Files are classified by their SOP Class UID (falling back to Modality), never
by name. Every problem with an input file raises :class:`InputError` naming
the file and, where it applies, the attribute. The user's files are only
read, never modified.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dvheval.engine.dvh import DVH
from dvheval.engine.geometry import CanonicalGrid, canonicalize, trilinear
from dvheval.engine.results import DoseInfo, PlanInfo, Prescription
from dvheval.errors import InputError

RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
RTPLAN_SOPS = {
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
}
#: DoseSummationType values of a dose delivered in one session, not the whole course.
SESSION_SUMMATIONS = frozenset({"FRACTION_SESSION", "BEAM_SESSION", "BRACHY_SESSION",
                                "CONTROL_POINT"})
_KIND_BY_SOP = {RTDOSE_SOP: "RTDOSE", RTSTRUCT_SOP: "RTSTRUCT",
                **dict.fromkeys(RTPLAN_SOPS, "RTPLAN")}
_KIND_BY_MODALITY = {"RTDOSE": "RTDOSE", "RTSTRUCT": "RTSTRUCT", "RTPLAN": "RTPLAN"}


def rt_kind(sop_class_uid: str, modality: str) -> str:
    """The kind of an object by its SOP Class UID, else by its Modality.

    Returns
    -------
    str
        ``"RTDOSE"``, ``"RTSTRUCT"``, ``"RTPLAN"`` (RT Plan or RT Ion Plan) or
        ``"OTHER"``.
    """
    return _KIND_BY_SOP.get(sop_class_uid) or _KIND_BY_MODALITY.get(modality.upper(), "OTHER")


# ------------------------------------------------------------ classification
@dataclass(frozen=True)
class DicomFile:
    """A file and the kind of object it holds (RTDOSE, RTSTRUCT, RTPLAN, OTHER)."""

    path: Path
    kind: str
    sop_instance_uid: str = ""


#: The ContourGeometricType values of DICOM (required in every contour).
CONTOUR_TYPES = frozenset({"POINT", "OPEN_PLANAR", "OPEN_NONPLANAR", "CLOSED_PLANAR",
                           "CLOSEDPLANAR_XOR"})


def classify(path: str | Path) -> DicomFile:
    """Read only the header of ``path`` and say what it holds.

    Raises
    ------
    InputError
        If the file is not DICOM or cannot be read.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "Modality", "SOPInstanceUID"],
        )
    except InvalidDicomError as exc:
        raise InputError("not a DICOM file (no DICM header)", path) from exc
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"not a readable DICOM file ({exc})", path) from exc
    sop_class, modality = str(ds.get("SOPClassUID", "") or ""), str(ds.get("Modality", "") or "")
    if not sop_class and not modality:
        raise InputError("the DICOM header has no SOPClassUID and no Modality (a truncated or "
                         "damaged file?)", path, "SOPClassUID")
    kind = rt_kind(sop_class, modality)
    return DicomFile(path, kind, str(ds.get("SOPInstanceUID", "")))


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file that can be read without blocking, or None.

    Only ``stat`` is used: opening a FIFO, socket or device can block for ever.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if path.is_symlink():
            return "a broken symbolic link or a link loop"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISDIR, "a folder"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


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
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.startswith("."):
                        continue
                    path = Path(root) / f
                    why = _not_regular(path)
                    if why is None:
                        out.append(path)
                    elif skipped is not None:
                        skipped.append((path, f"{why}: skipped"))
        elif p.exists() or p.is_symlink():
            why = _not_regular(p)
            if why is not None:
                raise InputError(f"{why}, not a DICOM file", p)
            out.append(p)
        else:
            raise InputError("no such file or folder", p)
    return out


@dataclass
class InputSet:
    """The RT files of one plan, sorted by kind."""

    doses: list[DicomFile]
    structure_set: DicomFile
    plan: DicomFile | None
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def find_inputs(paths: Iterable[str | Path]) -> InputSet:
    """Classify the given files and folders into one plan's RT objects.

    Files given directly must be DICOM; unreadable files inside folders are
    listed in ``ignored`` with the reason. Exactly one RTSTRUCT and at least
    one RTDOSE are needed; several RTSTRUCT or RTPLAN objects are ambiguous.

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
            # a file that is not DICOM at all (notes, images) is ignored; a DICOM file
            # that cannot be read may be a damaged part of the plan: never skipped
            if f in direct or not exc.message.startswith("not a DICOM file"):
                raise
            ignored.append((f, exc.message))
            continue
        if info.kind in found:
            found[info.kind].append(info)
        else:
            ignored.append((f, "not an RT object (ignored)"))
    where = ", ".join(str(p) for p in paths)
    if not found["RTSTRUCT"]:
        raise InputError(f"no RTSTRUCT (structure set) found in {where}")
    if len(found["RTSTRUCT"]) > 1:
        cands = "\n  ".join(str(f.path) for f in found["RTSTRUCT"])
        raise InputError(
            f"{len(found['RTSTRUCT'])} structure sets found; give exactly one:\n  {cands}"
        )
    if not found["RTDOSE"]:
        raise InputError(f"no RTDOSE found in {where}")
    if len(found["RTPLAN"]) > 1:
        cands = "\n  ".join(str(f.path) for f in found["RTPLAN"])
        raise InputError(f"{len(found['RTPLAN'])} RT plans found; give at most one:\n  {cands}")
    plan = found["RTPLAN"][0] if found["RTPLAN"] else None
    return InputSet(found["RTDOSE"], found["RTSTRUCT"][0], plan, ignored)


def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read DICOM file ({exc})", path) from exc


def _get(ds: pydicom.Dataset, keyword: str, path: Path, where: str = ""):
    """``ds.get(keyword)``, with a value pydicom cannot convert refused as an InputError."""
    try:
        return ds.get(keyword)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InputError(f"{where}the value cannot be read ({exc})", path, keyword) from exc


def _require(ds: pydicom.Dataset, keyword: str, path: Path):
    value = _get(ds, keyword, path)
    if value is None or (hasattr(value, "__len__") and len(value) == 0 and value != 0):
        raise InputError("required attribute is missing or empty", path, keyword)
    return value


# ------------------------------------------------------------- plausibility
#: Largest dose (Gy) a dose grid may hold anywhere. Far above any course of
#: radiotherapy, so a higher value means a wrong DoseGridScaling.
MAX_DOSE_GY = 1.0e4
#: Smallest maximum (Gy) of a dose grid that is not zero everywhere. A lower
#: maximum means a DoseGridScaling that shrinks the dose to nothing.
MIN_MAX_DOSE_GY = 1.0e-3
#: Plausible PixelSpacing and distance between dose frames (mm).
SPACING_RANGE_MM = (0.01, 50.0)
#: Largest plausible absolute patient coordinate (mm) of a grid or contour.
MAX_COORDINATE_MM = 1.0e5
#: Largest dose grid (voxels) that is read.
MAX_GRID_VOXELS = 2**31
#: Tolerance on the unit length and orthogonality of ImageOrientationPatient.
ORIENTATION_TOLERANCE = 1.0e-3
#: Plausible NumberOfFractionsPlanned and TargetPrescriptionDose (Gy).
MAX_FRACTIONS = 1000
MAX_PRESCRIPTION_GY = 1000.0
#: Enumerated values of DoseSummationType (DICOM PS3.3 C.8.8.3).
DOSE_SUMMATION_TYPES = frozenset({
    "PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION",
    "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD"})


def _shown(value: object, limit: int = 60) -> str:
    """A raw attribute value as short text for a message."""
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _floats(ds: pydicom.Dataset, keyword: str, path: Path, count: int | None = None,
            where: str = "") -> np.ndarray:
    """A required numeric attribute as finite floats.

    Raises
    ------
    InputError
        When the attribute is missing, holds text that is not a number, has
        not ``count`` values, or holds NaN or infinity.
    """
    value = _require(ds, keyword, path)
    items = [value] if isinstance(value, str | bytes) or not hasattr(value, "__iter__") \
        else list(value)
    try:
        out = np.array([float(v) for v in items], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}{_shown(value)!r} is not a list of numbers", path,
                         keyword) from exc
    if count is not None and out.size != count:
        raise InputError(f"{where}must have {count} value(s), has {out.size} "
                         f"({_shown(value)})", path, keyword)
    if not np.all(np.isfinite(out)):
        raise InputError(f"{where}holds a value that is not a finite number ({_shown(value)})",
                         path, keyword)
    return out


def _integer(ds: pydicom.Dataset, keyword: str, path: Path, *, required: bool = True,
             lo: int | None = None, hi: int | None = None, where: str = "") -> int | None:
    """A single whole-number attribute, optionally within ``[lo, hi]``.

    Returns None when the attribute is absent or empty and not required.

    Raises
    ------
    InputError
        When it is missing (and required), not one whole number, or out of range.
    """
    value = _get(ds, keyword, path, where)
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        if required:
            raise InputError(f"{where}required attribute is missing or empty", path, keyword)
        return None
    number = None
    if isinstance(value, int | float | str):
        try:
            as_float = float(value)
        except ValueError:
            as_float = float("nan")
        if np.isfinite(as_float) and as_float == int(as_float):
            number = int(as_float)
    if number is None:
        raise InputError(f"{where}{_shown(value)!r} is not a whole number", path, keyword)
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = (f"at least {lo}" if hi is None else f"at most {hi}" if lo is None
                  else f"from {lo} to {hi}")
        raise InputError(f"{where}{number} is out of range (must be {bounds})", path, keyword)
    return number


# ---------------------------------------------------------------------- dose
@dataclass(frozen=True)
class DoseGrid:
    """A dose distribution on a canonical ``[z, y, x]`` grid, in Gy.

    ``dose_gy`` is NaN where no dose is known (outside a resampled grid).
    """

    dose_gy: np.ndarray
    grid: CanonicalGrid
    affine: np.ndarray
    frame_of_reference_uid: str
    info: DoseInfo


@dataclass(frozen=True)
class _DoseFile:
    path: Path
    values: np.ndarray
    grid: CanonicalGrid
    affine: np.ndarray
    units: str
    summation: str
    frame_of_reference_uid: str
    plan_uid: str
    beam: str
    fraction_group: str


def read_dose_file(path: str | Path, relative_reference_gy: float | None = None) -> _DoseFile:
    """Read one RTDOSE file into a canonical grid (Gy).

    Every attribute the dose is built from is checked first, so that a
    damaged file is refused with the attribute named instead of giving a
    wrong dose:

    * pixel format: SamplesPerPixel 1, BitsAllocated 8, 16 or 32,
      BitsStored <= BitsAllocated, HighBit = BitsStored - 1,
      PixelRepresentation 0 or 1; the stored values must fit in BitsStored
      (they are read unmasked) and must not be negative; PixelData must
      hold exactly Rows x Columns x NumberOfFrames values;
    * DoseGridScaling finite, > 0 and at most :data:`MAX_DOSE_GY`, and the
      dose it gives plausible: at
      most :data:`MAX_DOSE_GY` anywhere and, unless every stored value is 0,
      a maximum of at least :data:`MIN_MAX_DOSE_GY`;
    * geometry: PixelSpacing two values and GridFrameOffsetVector steps
      within :data:`SPACING_RANGE_MM`, frame offsets strictly monotonic,
      ImagePositionPatient within :data:`MAX_COORDINATE_MM`,
      ImageOrientationPatient two orthogonal unit vectors (within
      :data:`ORIENTATION_TOLERANCE`), at most :data:`MAX_GRID_VOXELS` voxels;
      no value NaN or infinite;
    * DoseUnits GY or RELATIVE, DoseSummationType one of
      :data:`DOSE_SUMMATION_TYPES` (or absent), referenced RTPLAN items with
      their SOP Instance UID and whole fraction group and beam numbers.

    Parameters
    ----------
    path : str or Path
    relative_reference_gy : float, optional
        Dose (Gy) that a RELATIVE dose value of 1.0 stands for. RELATIVE
        doses are refused without it.

    Raises
    ------
    InputError
        When the file is not a usable RT Dose, naming the attribute.
    """
    from dvheval.engine.geometry import dicom_affine

    path = Path(path)
    ds = _read(path)
    if str(ds.get("SOPClassUID", "")) != RTDOSE_SOP and ds.get("Modality") != "RTDOSE":
        raise InputError("not an RT Dose object", path, "SOPClassUID")
    units = str(_require(ds, "DoseUnits", path)).strip().upper()
    if units not in ("GY", "RELATIVE"):
        raise InputError(f"unknown DoseUnits {units!r} (expected GY or RELATIVE)", path,
                         "DoseUnits")
    if units == "RELATIVE" and not relative_reference_gy:
        raise InputError(
            "dose is RELATIVE; give the prescription (--rx GY) that a relative dose of 1.0 "
            "stands for",
            path,
            "DoseUnits",
        )
    summation = str(ds.get("DoseSummationType", "") or "").strip().upper()
    if summation and summation not in DOSE_SUMMATION_TYPES:
        raise InputError(
            f"unknown DoseSummationType {summation!r} (expected one of "
            f"{', '.join(sorted(DOSE_SUMMATION_TYPES))}); without it doses cannot be summed "
            "safely",
            path,
            "DoseSummationType",
        )
    if summation in SESSION_SUMMATIONS:
        raise InputError(
            f"DoseSummationType {summation} is the dose of a single session (fraction), not of "
            "the course that protocol limits are written for; export the PLAN dose (or the "
            "BEAM or FRACTION doses of the whole course)",
            path,
            "DoseSummationType",
        )
    ipp, iop, spacing = _image_plane(ds, path)
    scaling = float(_floats(ds, "DoseGridScaling", path, 1)[0])
    if not 0.0 < scaling <= MAX_DOSE_GY:
        raise InputError(f"is {scaling:g}; it must be greater than 0 and at most "
                         f"{MAX_DOSE_GY:g} (Gy per stored unit)", path, "DoseGridScaling")
    stored = _stored_values(ds, path)
    nframes = stored.shape[0]
    if nframes < 2:
        raise InputError("a single-frame RT Dose is a plane, not a volume; a DVH needs a 3-D "
                         "dose grid", path, "NumberOfFrames")
    factor = scaling * (float(relative_reference_gy) if units == "RELATIVE" else 1.0)
    _check_dose_range(stored, scaling, factor, path)
    values = np.multiply(stored, factor, dtype=np.float32)
    offsets = _frame_offsets(ds, path, nframes, ipp, iop)
    try:
        canon, grid = canonicalize(values, ipp, iop, spacing, offsets)
    except ValueError as exc:
        raise InputError(str(exc), path, "ImageOrientationPatient") from exc
    step = float(np.median(np.diff(offsets)))
    affine = dicom_affine(ipp, iop, spacing, step)
    plan_uid, fraction_group, beam = _referenced_plan(ds, path)
    for_uid = str(_require(ds, "FrameOfReferenceUID", path))
    return _DoseFile(
        path=path,
        values=canon,
        grid=grid,
        affine=affine,
        units=units,
        summation=summation,
        frame_of_reference_uid=for_uid,
        plan_uid=plan_uid,
        beam=beam,
        fraction_group=fraction_group,
    )


def _image_plane(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImagePositionPatient, ImageOrientationPatient and PixelSpacing, checked."""
    ipp = _floats(ds, "ImagePositionPatient", path, 3)
    if np.any(np.abs(ipp) > MAX_COORDINATE_MM):
        raise InputError(f"position {ipp.tolist()} mm is implausible (a coordinate beyond "
                         f"{MAX_COORDINATE_MM:g} mm)", path, "ImagePositionPatient")
    iop = _floats(ds, "ImageOrientationPatient", path, 6)
    row, col = iop[:3], iop[3:]
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    dot = float(np.dot(row, col))
    if max(abs(n - 1.0) for n in norms) > ORIENTATION_TOLERANCE or abs(dot) > \
            ORIENTATION_TOLERANCE:
        raise InputError(
            f"row and column directions {row.tolist()}, {col.tolist()} must be orthogonal "
            f"unit vectors (lengths {norms[0]:.4g}, {norms[1]:.4g}; dot product {dot:.3g})",
            path, "ImageOrientationPatient")
    spacing = _floats(ds, "PixelSpacing", path, 2)
    lo, hi = _spacing_bounds()
    if np.any(spacing < lo) or np.any(spacing > hi):
        raise InputError(f"{spacing.tolist()} mm is not a plausible dose pixel size (each "
                         f"value must be from {lo:g} to {hi:g} mm)", path, "PixelSpacing")
    return ipp, iop, spacing


def _spacing_bounds() -> tuple[float, float]:
    """:data:`SPACING_RANGE_MM` widened by rounding (steps are differences of offsets)."""
    lo, hi = SPACING_RANGE_MM
    return lo * (1 - 1e-6), hi * (1 + 1e-6)


def _stored_values(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """The stored pixel values ``[frame, row, col]`` as integers, unmasked and checked.

    Uncompressed pixel data is read straight from the bytes, so that values
    which do not fit in BitsStored are seen (pydicom would mask their high
    bits and shrink the dose) and refused.
    """
    rows = _integer(ds, "Rows", path, lo=1)
    cols = _integer(ds, "Columns", path, lo=1)
    frames = _integer(ds, "NumberOfFrames", path, required=False, lo=1) or 1
    samples = _integer(ds, "SamplesPerPixel", path)
    if samples != 1:
        raise InputError(f"is {samples}; a dose grid has one value per voxel (1)", path,
                         "SamplesPerPixel")
    allocated = _integer(ds, "BitsAllocated", path)
    if allocated not in (8, 16, 32):
        raise InputError(f"is {allocated}; a dose grid uses 8, 16 or 32 bits", path,
                         "BitsAllocated")
    bits = _integer(ds, "BitsStored", path, lo=1, hi=allocated)
    high = _integer(ds, "HighBit", path)
    if high != bits - 1:
        raise InputError(f"is {high}, but BitsStored {bits} needs HighBit {bits - 1}", path,
                         "HighBit")
    signed = _integer(ds, "PixelRepresentation", path, lo=0, hi=1) == 1
    voxels = rows * cols * frames
    if voxels > MAX_GRID_VOXELS:
        raise InputError(f"the grid of {cols} x {rows} x {frames} = {voxels} voxels is larger "
                         f"than the {MAX_GRID_VOXELS} voxels that can be read", path,
                         "NumberOfFrames")
    _require(ds, "PixelData", path)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        stored = _decoded_values(ds, path, voxels)
    else:
        data = ds.PixelData
        size = allocated // 8
        expected = voxels * size
        if len(data) not in (expected, expected + (expected % 2)):
            raise InputError(
                f"holds {len(data)} bytes, but Rows x Columns x NumberOfFrames x "
                f"BitsAllocated/8 = {rows} x {cols} x {frames} x {size} = {expected} bytes; "
                "the image attributes do not describe the pixel data",
                path, "PixelData")
        little = ds.original_encoding[1] is not False
        dtype = np.dtype(f"{'<' if little else '>'}{'i' if signed else 'u'}{size}")
        stored = np.frombuffer(data, dtype=dtype, count=voxels)
    if stored.size and signed and int(stored.min()) < 0:
        raise InputError(
            f"signed pixel values (PixelRepresentation 1) include negative values (down to "
            f"{int(stored.min())}); a dose cannot be negative", path, "PixelData")
    top = int(stored.max()) if stored.size else 0
    limit = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    if top > limit:
        raise InputError(
            f"stored values up to {top} do not fit in BitsStored {bits} (largest {limit}); "
            "reading them would cut off their high bits and shrink the dose", path,
            "BitsStored")
    return stored.reshape(frames, rows, cols)


def _decoded_values(ds: pydicom.Dataset, path: Path, voxels: int) -> np.ndarray:
    """Pixel values of compressed pixel data, decoded by pydicom."""
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several types for bad pixel data
        raise InputError(f"cannot decode pixel data ({exc})", path, "PixelData") from exc
    if pixels.size != voxels:
        raise InputError(f"decodes to {pixels.size} values, but Rows x Columns x "
                         f"NumberOfFrames = {voxels}", path, "PixelData")
    return pixels.reshape(-1)


def _check_dose_range(stored: np.ndarray, scaling: float, factor: float, path: Path) -> None:
    """Refuse a DoseGridScaling that makes the dose implausibly high or vanish."""
    top = int(stored.max()) if stored.size else 0
    if top == 0:
        return
    max_gy = top * factor
    if not np.isfinite(max_gy) or max_gy > MAX_DOSE_GY:
        raise InputError(
            f"the highest stored value {top} times {factor:.6g} gives {max_gy:.4g} Gy, "
            f"above the plausible {MAX_DOSE_GY:g} Gy; DoseGridScaling {scaling:.6g} is wrong",
            path, "DoseGridScaling")
    if max_gy < MIN_MAX_DOSE_GY or float(np.float32(max_gy)) == 0.0:
        raise InputError(
            f"the highest stored value {top} times {factor:.6g} gives {max_gy:.4g} Gy, below "
            f"{MIN_MAX_DOSE_GY:g} Gy: not a usable dose; DoseGridScaling {scaling:.6g} is "
            "wrong", path, "DoseGridScaling")


def _frame_offsets(ds: pydicom.Dataset, path: Path, nframes: int, ipp: np.ndarray,
                   iop: np.ndarray) -> np.ndarray:
    """GridFrameOffsetVector relative to the first frame, checked."""
    key = "GridFrameOffsetVector"
    if ds.get(key) is None:
        raise InputError("required for a multi-frame dose", path, key)
    offsets = _floats(ds, key, path)
    if offsets.size != nframes:
        raise InputError(f"has {offsets.size} values for {nframes} frames", path, key)
    normal = np.cross(iop[:3], iop[3:])
    if offsets[0] != 0.0:
        # absolute form: the values are patient z of each frame (axial grids only)
        if abs(abs(normal[2]) - 1.0) > 1e-4:
            raise InputError("absolute frame offsets (first value not 0) are only defined "
                             "for axial grids", path, key)
        offsets = (offsets - ipp[2]) / normal[2]
    steps = np.diff(offsets)
    if np.any(steps == 0):
        raise InputError("frames repeat a position", path, key)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise InputError("frame positions are not monotonic (they go back and forth)", path,
                         key)
    lo, hi = _spacing_bounds()
    size = np.abs(steps)
    if np.any(size < lo) or np.any(size > hi):
        raise InputError(f"steps between frames from {size.min():g} to {size.max():g} mm are "
                         f"not plausible (each must be from {lo:g} to {hi:g} mm)", path, key)
    return offsets


def _referenced_plan(ds: pydicom.Dataset, path: Path) -> tuple[str, str, str]:
    """Plan UID, fraction group and beam number the dose references ('' when not given)."""
    plan_uid = beam = fraction_group = ""
    refs = ds.get("ReferencedRTPlanSequence")
    if not refs:
        return plan_uid, fraction_group, beam
    for item in refs:
        if not str(item.get("ReferencedSOPInstanceUID", "") or "").strip():
            raise InputError("an item has no ReferencedSOPInstanceUID, so the RTPLAN the dose "
                             "belongs to cannot be checked", path, "ReferencedRTPlanSequence")
    plan_uid = str(refs[0].ReferencedSOPInstanceUID).strip()
    fgs = refs[0].get("ReferencedFractionGroupSequence")
    if fgs:
        number = _integer(fgs[0], "ReferencedFractionGroupNumber", path, required=False)
        fraction_group = "" if number is None else str(number)
        beams = fgs[0].get("ReferencedBeamSequence")
        if beams:
            number = _integer(beams[0], "ReferencedBeamNumber", path, required=False)
            beam = "" if number is None else str(number)
    return plan_uid, fraction_group, beam


def _resample(src: _DoseFile, grid: CanonicalGrid) -> np.ndarray:
    zz, yy, xx = np.meshgrid(grid.z, grid.y, grid.x, indexing="ij")
    out = trilinear(src.values.astype(np.float64), src.grid, xx.ravel(), yy.ravel(), zz.ravel())
    return out.reshape(grid.shape).astype(np.float32)


def load_dose(
    paths: Sequence[str | Path],
    relative_reference_gy: float | None = None,
    plan: PlanInfo | None = None,
) -> DoseGrid:
    """Read one or more RTDOSE files of one plan and sum them.

    Several files are summed when they share the Frame of Reference; files
    on a different grid are resampled (trilinear) onto the grid of the first
    file, and points outside their grid are marked unknown (NaN) rather than
    taken as zero dose. Mixing a PLAN dose with BEAM/FRACTION doses, or two
    doses of the same plan/beam, would count dose twice and is refused.

    Parameters
    ----------
    paths : sequence of str or Path
        The RTDOSE files.
    relative_reference_gy : float, optional
        Dose a RELATIVE dose value of 1.0 stands for.
    plan : PlanInfo, optional
        The RTPLAN of the doses. Then every dose must reference it, and BEAM
        doses must cover every treatment beam of its fraction group: a
        missing beam would make the summed dose too low.

    Raises
    ------
    InputError
    """
    files = [read_dose_file(p, relative_reference_gy) for p in paths]
    if plan is not None:
        _check_against_plan(files, plan)
    ref = files[0]
    for f in files[1:]:
        if f.frame_of_reference_uid != ref.frame_of_reference_uid:
            raise InputError(
                f"Frame of Reference {f.frame_of_reference_uid} differs from "
                f"{ref.frame_of_reference_uid} of {ref.path}; doses cannot be summed",
                f.path,
                "FrameOfReferenceUID",
            )
    if len(files) > 1:
        _check_summable(files)
    total = ref.values.copy() if len(files) > 1 else ref.values
    resampled = []
    for f in files[1:]:
        if f.grid.same_as(ref.grid):
            total = total + f.values
        else:
            total = total + _resample(f, ref.grid)
            resampled.append(str(f.path))
    max_gy, max_pos = _dose_maximum(total, ref.grid)
    kinds = sorted({f.summation or "UNKNOWN" for f in files})
    if len(files) == 1:
        summation = ref.summation or "UNKNOWN"
    else:
        summation = f"sum of {len(files)} {'/'.join(kinds)} doses"
    info = DoseInfo(
        files=[str(f.path) for f in files],
        units="GY",
        summation=summation,
        summation_types=[f.summation for f in files],
        frame_of_reference_uid=ref.frame_of_reference_uid,
        grid_shape=ref.grid.shape,
        grid_spacing_mm=ref.grid.spacing,
        grid_origin_mm=(float(ref.grid.x[0]), float(ref.grid.y[0]), float(ref.grid.z[0])),
        resampled_files=resampled,
        sha256={str(f.path): sha256_of(f.path) for f in files},
        max_gy=max_gy,
        max_position_mm=max_pos,
    )
    return DoseGrid(total, ref.grid, ref.affine,
                    ref.frame_of_reference_uid, info)


def _dose_maximum(
    dose: np.ndarray, grid: CanonicalGrid
) -> tuple[float | None, tuple[float, float, float] | None]:
    """Highest finite dose of the grid (Gy) and its voxel centre (x, y, z mm); 0 Gy and no
    position when the grid holds no finite dose."""
    finite = np.where(np.isfinite(dose), dose, -np.inf)
    k = int(np.argmax(finite))
    value = float(finite.flat[k])
    if not np.isfinite(value):
        return 0.0, None
    iz, iy, ix = np.unravel_index(k, dose.shape)
    return value, (float(grid.x[ix]), float(grid.y[iy]), float(grid.z[iz]))


def _check_against_plan(files: Sequence[_DoseFile], plan: PlanInfo) -> None:
    for f in files:
        if (f.plan_uid and plan.sop_instance_uid and f.summation != "MULTI_PLAN"
                and f.plan_uid != plan.sop_instance_uid):
            raise InputError(
                f"references RTPLAN {f.plan_uid}, but the RTPLAN given ({plan.file}) is "
                f"{plan.sop_instance_uid}; give the RTPLAN this dose was calculated for, or "
                "leave the RTPLAN out",
                f.path,
                "ReferencedRTPlanSequence",
            )
    beam_files = [f for f in files if f.summation == "BEAM"]
    groups = {g: b for g, b in plan.treatment_beams.items() if b}
    if not beam_files or not groups:
        return
    given: dict[str, set[str]] = {}
    for f in beam_files:
        if not f.beam:
            raise InputError(
                "a BEAM dose must name its beam (ReferencedBeamSequence) so that every "
                f"beam of the RTPLAN {plan.file} can be checked to have its dose",
                f.path,
                "ReferencedRTPlanSequence",
            )
        group = f.fraction_group or (next(iter(groups)) if len(groups) == 1 else "")
        if group not in groups:
            raise InputError(
                f"references fraction group {group or '(none)'}, which delivers no beams in "
                f"the RTPLAN {plan.file} (groups with beams: {', '.join(groups)})",
                f.path,
                "ReferencedFractionGroupNumber",
            )
        given.setdefault(group, set()).add(f.beam)
    for group, beams in given.items():
        missing = [b for b in groups[group] if b not in beams]
        if missing:
            raise InputError(
                f"the RTPLAN {plan.file} delivers beams {', '.join(groups[group])} in "
                f"fraction group {group}, but beam doses were given only for beam(s) "
                f"{', '.join(sorted(beams, key=_natural))}; beam(s) {', '.join(missing)} have "
                "no RTDOSE, so the summed dose would be too low",
                beam_files[0].path,
                "ReferencedBeamNumber",
            )


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)


def _treatment_beams(ds: pydicom.Dataset) -> dict[str, tuple[str, ...]]:
    setup = {
        str(b.get("BeamNumber", ""))
        for seq in ("BeamSequence", "IonBeamSequence")
        for b in ds.get(seq, []) or []
        if str(b.get("TreatmentDeliveryType", "")).upper() == "SETUP"
    }
    out = {}
    for group in ds.get("FractionGroupSequence", []) or []:
        beams = []
        for ref in group.get("ReferencedBeamSequence", []) or []:
            number = str(ref.get("ReferencedBeamNumber", "") or "")
            meterset = ref.get("BeamMeterset")
            try:
                delivers = meterset in (None, "") or float(meterset) > 0
            except (TypeError, ValueError):
                delivers = True
            if number and number not in setup and delivers:
                beams.append(number)
        out[str(group.get("FractionGroupNumber", "") or "")] = tuple(beams)
    return out


def _check_summable(files: Sequence[_DoseFile]) -> None:
    plan_like = [f for f in files if f.summation in ("PLAN", "MULTI_PLAN", "RECORD")]
    parts = [f for f in files if f not in plan_like]
    if plan_like and parts:
        raise InputError(
            "a plan dose ("
            + ", ".join(f"{f.path} [{f.summation}]" for f in plan_like)
            + ") cannot be summed with beam/fraction doses ("
            + ", ".join(f"{f.path} [{f.summation or 'no type'}]" for f in parts)
            + "): that would count the dose twice; give one or the other",
            plan_like[0].path,
            "DoseSummationType",
        )
    seen: dict[tuple, Path] = {}
    for f in files:
        if f.summation in ("PLAN", "MULTI_PLAN", "RECORD"):
            key = (f.summation, f.plan_uid)
        elif f.summation == "BEAM":
            key = ("BEAM", f.plan_uid, f.fraction_group, f.beam)
        else:
            key = (f.summation, f.plan_uid, f.fraction_group, f.beam, str(f.path))
        if key[1] and key in seen:
            raise InputError(
                f"duplicates {seen[key]} ({f.summation} dose of the same plan"
                + (f", beam {f.beam}" if f.beam else "")
                + "); summing both would count the dose twice",
                f.path,
                "DoseSummationType",
            )
        seen[key] = f.path


# ------------------------------------------------------------------ structures
@dataclass(frozen=True)
class Contour:
    """One contour: geometric type and (N, 3) points in patient mm."""

    geometric_type: str
    points: np.ndarray


@dataclass(frozen=True)
class ROI:
    """A region of interest of a structure set."""

    number: int
    name: str
    interpreted_type: str
    frame_of_reference_uid: str
    contours: tuple[Contour, ...]


@dataclass(frozen=True)
class StructureSet:
    path: Path
    label: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    rois: tuple[ROI, ...]

    def slice_thickness(self) -> float | None:
        """Most common distance (mm) between consecutive contour planes of all ROIs."""
        zs = set()
        for roi in self.rois:
            for c in roi.contours:
                if c.geometric_type.startswith("CLOSED") and len(c.points):
                    zs.add(round(float(c.points[0, 2]), 2))
        z = np.array(sorted(zs))
        if z.size < 2:
            return None
        d = np.round(np.diff(z), 2)
        d = d[d > 0.01]
        if d.size == 0:
            return None
        vals, counts = np.unique(d, return_counts=True)
        return float(vals[np.argmax(counts)])


def read_structure_set(path: str | Path) -> StructureSet:
    """Read an RTSTRUCT: ROI numbers, names, interpreted types and contours.

    ROI numbers must be whole numbers and unique; every contour's
    ContourData must hold finite x, y, z triplets within
    :data:`MAX_COORDINATE_MM` (and as many as NumberOfContourPoints says).
    Contours filed under an ROI number the structure set does not define are
    refused when a defined ROI has no contours, since they may be its own.

    Raises
    ------
    InputError
        Naming the file, the attribute and, for contours, the ROI.
    """
    path = Path(path)
    ds = _read(path)
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP and ds.get("Modality") != "RTSTRUCT":
        raise InputError("not an RT Structure Set", path, "SOPClassUID")
    rois_seq = ds.get("StructureSetROISequence")
    if rois_seq is None:
        raise InputError("required attribute is missing", path, "StructureSetROISequence")
    set_for = ""
    rfor = ds.get("ReferencedFrameOfReferenceSequence")
    if rfor:
        set_for = str(rfor[0].get("FrameOfReferenceUID", ""))
    names: dict[int, str] = {}
    for item in rois_seq:
        num = _integer(item, "ROINumber", path)
        name = str(item.get("ROIName", "") or f"ROI {num}")
        if num in names:
            raise InputError(f"ROI number {num} is used by both {names[num]!r} and {name!r}",
                             path, "ROINumber")
        names[num] = name
    types: dict[int, str] = {}
    for obs in ds.get("RTROIObservationsSequence", []) or []:
        num = _integer(obs, "ReferencedROINumber", path, required=False,
                       where="an RT ROI Observations item: ")
        if num is not None:
            types[num] = str(obs.get("RTROIInterpretedType", "") or "")
    contours: dict[int, list[Contour]] = {}
    for item in ds.get("ROIContourSequence", []) or []:
        if "ReferencedROINumber" not in item:
            raise InputError("an ROI Contour item has no ReferencedROINumber", path,
                             "ROIContourSequence")
        num = _integer(item, "ReferencedROINumber", path, where="an ROI Contour item: ")
        lst = contours.setdefault(num, [])
        label = _roi_label(num, names)
        for c in item.get("ContourSequence", []) or []:
            gtype = str(c.get("ContourGeometricType", "") or "").strip().upper()
            if gtype not in CONTOUR_TYPES:
                raise InputError(
                    f"ROI {label}: a contour has ContourGeometricType {gtype or '(none)'!r}; "
                    f"expected one of {', '.join(sorted(CONTOUR_TYPES))}", path,
                    "ContourGeometricType")
            data = _contour_values(c, path, num, label)
            lst.append(Contour(gtype, data.reshape(-1, 3)))
    _check_orphan_contours(contours, names, path)
    rois = []
    for item in rois_seq:
        num = int(item.ROINumber)
        rois.append(
            ROI(
                number=num,
                name=names[num],
                interpreted_type=types.get(num, ""),
                frame_of_reference_uid=str(item.get("ReferencedFrameOfReferenceUID", "")
                                           or set_for),
                contours=tuple(contours.get(num, [])),
            )
        )
    return StructureSet(
        path=path,
        label=str(ds.get("StructureSetLabel", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        frame_of_reference_uid=set_for or (rois[0].frame_of_reference_uid if rois else ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        rois=tuple(rois),
    )


def _roi_label(number: int, names: dict[int, str]) -> str:
    """``ROI 5 'PTV40'`` for messages."""
    if number in names:
        return f"ROI {number} {names[number]!r}"
    return f"ROI {number} (not defined in StructureSetROISequence)"


def _check_orphan_contours(contours: dict[int, list[Contour]], names: dict[int, str],
                           path: Path) -> None:
    """Refuse contours of an undefined ROI number when a defined ROI has none.

    Such contours are not part of any structure; when a named ROI has no
    contours of its own they may well be its contours under a damaged
    number, and that ROI would be reported empty instead of evaluated.
    """
    orphans = sorted(n for n, lst in contours.items() if lst and n not in names)
    bare = [f"{n} {names[n]!r}" for n in names if not contours.get(n)]
    if orphans and bare:
        raise InputError(
            f"contours are filed under ROI number(s) {', '.join(map(str, orphans))}, which "
            f"the structure set does not define, while ROI(s) {', '.join(bare)} have no "
            "contours; the contours cannot be attributed",
            path, "ReferencedROINumber")


def _contour_values(item: pydicom.Dataset, path: Path, roi_number: int,
                    roi_label: str | None = None) -> np.ndarray:
    """ContourData as floats, parsed straight from the raw bytes when possible.

    Raises
    ------
    InputError
        When ContourData is missing or empty, is not numbers, is not x, y, z
        triplets, holds NaN, infinity or a coordinate beyond
        :data:`MAX_COORDINATE_MM`, or disagrees with NumberOfContourPoints.
    """
    label = roi_label or f"ROI {roi_number}"
    tag = 0x30060050
    raw = getattr(item.get_item(tag), "value", None) if tag in item else None
    try:
        if isinstance(raw, bytes | bytearray):
            text = raw.decode("ascii").replace("\\", " ")
            data = np.array(text.split(), dtype=float)
        elif raw is None:
            data = np.zeros(0)
        else:
            value = item.ContourData
            items = [value] if isinstance(value, str) or not hasattr(value, "__iter__") \
                else value
            data = np.asarray([float(v) for v in items], dtype=float)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: ContourData is not a list of numbers ({exc})",
                         path, "ContourData") from exc
    if data.size == 0:
        raise InputError(f"{label}: a contour has no points (ContourData missing or empty)",
                         path, "ContourData")
    if data.size % 3:
        raise InputError(f"{label}: ContourData has {data.size} values, not a multiple of 3",
                         path, "ContourData")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{label}: ContourData holds a value that is not a finite number",
                         path, "ContourData")
    far = float(np.abs(data).max())
    if far > MAX_COORDINATE_MM:
        raise InputError(f"{label}: ContourData has a coordinate of {far:g} mm, beyond the "
                         f"plausible {MAX_COORDINATE_MM:g} mm", path, "ContourData")
    count = _integer(item, "NumberOfContourPoints", path, required=False, where=f"{label}: ")
    if count is not None and count != data.size // 3:
        raise InputError(f"{label}: NumberOfContourPoints is {count}, but ContourData holds "
                         f"{data.size // 3} points", path, "NumberOfContourPoints")
    return data


# ---------------------------------------------------------------------- plan
def read_plan(path: str | Path) -> PlanInfo:
    """Prescription (dose levels and fractions) from an RTPLAN.

    NumberOfFractionsPlanned (of the first fraction group) must be a whole
    number from 1 to :data:`MAX_FRACTIONS`; each TargetPrescriptionDose a
    finite dose above 0 and at most :data:`MAX_PRESCRIPTION_GY` Gy.

    Raises
    ------
    InputError
    """
    path = Path(path)
    ds = _read(path)
    fractions = None
    fgs = ds.get("FractionGroupSequence")
    if fgs:
        fractions = _integer(fgs[0], "NumberOfFractionsPlanned", path, required=False,
                             lo=1, hi=MAX_FRACTIONS)
    rx = []
    for i, item in enumerate(ds.get("DoseReferenceSequence", []) or [], start=1):
        if item.get("TargetPrescriptionDose") is None:
            continue
        name = str(item.get("DoseReferenceDescription", "") or f"Dose reference {i}")
        where = f"dose reference {name!r}: "
        dose = float(_floats(item, "TargetPrescriptionDose", path, 1, where=where)[0])
        if not 0.0 < dose <= MAX_PRESCRIPTION_GY:
            raise InputError(f"{where}{dose:g} Gy is not a plausible prescription (must be "
                             f"above 0 and at most {MAX_PRESCRIPTION_GY:g} Gy)", path,
                             "TargetPrescriptionDose")
        rx.append(Prescription(name, dose, fractions))
    return PlanInfo(
        file=str(path),
        label=str(ds.get("RTPlanLabel", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        prescriptions=rx,
        fractions=fractions,
        treatment_beams=_treatment_beams(ds),
    )


# ------------------------------------------------------------- stored DVHs
def read_stored_dvhs(path: str | Path) -> dict[int, DVH]:
    """DVHs a planning system stored in an RTDOSE's DVH Sequence, by ROI number.

    Only cumulative or differential DVHs in GY with volumes in CM3 are read;
    others are skipped. Useful to compare dvheval's DVHs with the planning
    system's own.

    Raises
    ------
    InputError
        When the file cannot be read or a DVH item is damaged (ROI number not
        a whole number, DVHData not finite dose/volume pairs, negative bin
        widths or volumes beyond rounding (1e-6 of the largest volume),
        DVHDoseScaling not finite and above 0).
    """
    path = Path(path)
    ds = _read(path, stop_before_pixels=True)
    out: dict[int, DVH] = {}
    for item in ds.get("DVHSequence", []) or []:
        if str(item.get("DoseUnits", "")).upper() != "GY":
            continue
        if str(item.get("DVHVolumeUnits", "")).upper() != "CM3":
            continue
        refs = item.get("DVHReferencedROISequence")
        if not refs:
            continue
        roi = _integer(refs[0], "ReferencedROINumber", path, where="a DVH item: ")
        where = f"the DVH of ROI {roi}: "
        data = _floats(item, "DVHData", path, where=where)
        if data.size % 2:
            raise InputError(f"{where}DVHData has {data.size} values, not dose/volume pairs",
                             path, "DVHData")
        data = data.reshape(-1, 2)
        scale = 1.0
        if item.get("DVHDoseScaling") not in (None, ""):
            scale = float(_floats(item, "DVHDoseScaling", path, 1, where=where)[0])
            if scale <= 0:
                raise InputError(f"{where}must be greater than 0, is {scale:g}", path,
                                 "DVHDoseScaling")
        widths, vols = data[:, 0] * scale, data[:, 1]
        # planning systems store rounding noise such as -3e-13 cc; more is damage
        if np.any(widths < 0) or np.any(vols < -1e-6 * max(1.0, float(vols.max()))):
            raise InputError(f"{where}DVHData holds negative bin widths or volumes", path,
                             "DVHData")
        edges = np.concatenate([[0.0], np.cumsum(widths)])
        if str(item.get("DVHType", "")).upper() == "CUMULATIVE":
            diff = np.clip(vols - np.concatenate([vols[1:], [0.0]]), 0.0, None)
        else:
            diff = vols
        nz = np.nonzero(diff > 0)[0]
        if nz.size == 0:
            continue
        edges = edges[nz[0]: nz[-1] + 2]
        diff = diff[nz[0]: nz[-1] + 1]
        total = float(diff.sum())
        centres = 0.5 * (edges[:-1] + edges[1:])
        out[roi] = DVH(edges, diff, total, float(edges[0]), float(edges[-1]),
                       float(np.dot(diff, centres) / total))
    return out

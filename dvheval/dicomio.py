"""Reading DICOM-RT files: RTDOSE grids, RTSTRUCT contours, RTPLAN prescriptions.

Files are classified by their SOP Class UID (falling back to Modality), never
by name. Every problem with an input file raises :class:`InputError` naming
the file and, where it applies, the attribute. The user's files are only
read, never modified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .dvh import DVH
from .errors import InputError
from .geometry import CanonicalGrid, canonicalize, trilinear
from .results import DoseInfo, PlanInfo, Prescription

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
    kind = rt_kind(str(ds.get("SOPClassUID", "")), str(ds.get("Modality", "")))
    return DicomFile(path, kind, str(ds.get("SOPInstanceUID", "")))


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly plus every file below named folders (sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if not f.startswith("."):
                        out.append(Path(root) / f)
        elif p.exists():
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
    paths = list(paths)
    direct = {Path(p) for p in paths if not Path(p).is_dir()}
    found: dict[str, list[DicomFile]] = {"RTDOSE": [], "RTSTRUCT": [], "RTPLAN": []}
    ignored: list[tuple[Path, str]] = []
    for f in expand_paths(paths):
        try:
            info = classify(f)
        except InputError as exc:
            if f in direct:
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


def _read(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read DICOM file ({exc})", path) from exc


def _require(ds: pydicom.Dataset, keyword: str, path: Path):
    value = ds.get(keyword)
    if value is None or (hasattr(value, "__len__") and len(value) == 0 and value != 0):
        raise InputError("required attribute is missing or empty", path, keyword)
    return value


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

    Parameters
    ----------
    path : str or Path
    relative_reference_gy : float, optional
        Dose (Gy) that a RELATIVE dose value of 1.0 stands for. RELATIVE
        doses are refused without it.
    """
    from .geometry import dicom_affine

    path = Path(path)
    ds = _read(path)
    if str(ds.get("SOPClassUID", "")) != RTDOSE_SOP and ds.get("Modality") != "RTDOSE":
        raise InputError("not an RT Dose object", path, "SOPClassUID")
    units = str(_require(ds, "DoseUnits", path)).upper()
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
    summation = str(ds.get("DoseSummationType", "") or "").upper()
    if summation in SESSION_SUMMATIONS:
        raise InputError(
            f"DoseSummationType {summation} is the dose of a single session (fraction), not of "
            "the course that protocol limits are written for; export the PLAN dose (or the "
            "BEAM or FRACTION doses of the whole course)",
            path,
            "DoseSummationType",
        )
    ipp = [float(v) for v in _require(ds, "ImagePositionPatient", path)]
    iop = [float(v) for v in _require(ds, "ImageOrientationPatient", path)]
    spacing = [float(v) for v in _require(ds, "PixelSpacing", path)]
    if len(ipp) != 3:
        raise InputError("must have 3 values", path, "ImagePositionPatient")
    if len(iop) != 6:
        raise InputError("must have 6 values", path, "ImageOrientationPatient")
    if len(spacing) != 2 or min(spacing) <= 0:
        raise InputError("must be two positive values", path, "PixelSpacing")
    scaling = ds.get("DoseGridScaling")
    if scaling is None:
        raise InputError("required attribute is missing", path, "DoseGridScaling")
    scaling = float(scaling)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for bad pixel data
        raise InputError(f"cannot decode pixel data ({exc})", path, "PixelData") from exc
    factor = scaling * (float(relative_reference_gy) if units == "RELATIVE" else 1.0)
    values = np.multiply(pixels, factor, dtype=np.float32).reshape(
        nframes, int(ds.Rows), int(ds.Columns))
    if nframes < 2:
        raise InputError("a single-frame RT Dose is a plane, not a volume; a DVH needs a 3-D "
                         "dose grid", path, "NumberOfFrames")
    gfov = ds.get("GridFrameOffsetVector")
    if gfov is None:
        raise InputError("required for a multi-frame dose", path, "GridFrameOffsetVector")
    offsets = np.array([float(v) for v in gfov])
    if offsets.size != nframes:
        raise InputError(f"has {offsets.size} values for {nframes} frames", path,
                         "GridFrameOffsetVector")
    normal = np.cross(iop[:3], iop[3:])
    if offsets[0] != 0.0:
        # absolute form: the values are patient z of each frame (axial grids only)
        if abs(abs(normal[2]) - 1.0) > 1e-4:
            raise InputError("absolute frame offsets (first value not 0) are only defined "
                             "for axial grids", path, "GridFrameOffsetVector")
        offsets = (offsets - ipp[2]) / normal[2]
    if np.any(np.diff(offsets) == 0):
        raise InputError("frames repeat a position", path, "GridFrameOffsetVector")
    try:
        canon, grid = canonicalize(values, ipp, iop, spacing, offsets)
    except ValueError as exc:
        raise InputError(str(exc), path, "ImageOrientationPatient") from exc
    step = float(np.median(np.diff(offsets)))
    affine = dicom_affine(ipp, iop, spacing, step)
    plan_uid = beam = fraction_group = ""
    refs = ds.get("ReferencedRTPlanSequence")
    if refs:
        plan_uid = str(refs[0].get("ReferencedSOPInstanceUID", ""))
        fgs = refs[0].get("ReferencedFractionGroupSequence")
        if fgs:
            fraction_group = str(fgs[0].get("ReferencedFractionGroupNumber", ""))
            beams = fgs[0].get("ReferencedBeamSequence")
            if beams:
                beam = str(beams[0].get("ReferencedBeamNumber", ""))
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
    """Highest finite dose of the grid (Gy) and its voxel centre (x, y, z mm)."""
    finite = np.where(np.isfinite(dose), dose, -np.inf)
    k = int(np.argmax(finite))
    value = float(finite.flat[k])
    if not np.isfinite(value):
        return None, None
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
    """Read an RTSTRUCT: ROI numbers, names, interpreted types and contours."""
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
    types: dict[int, str] = {}
    for obs in ds.get("RTROIObservationsSequence", []) or []:
        if "ReferencedROINumber" in obs:
            types[int(obs.ReferencedROINumber)] = str(obs.get("RTROIInterpretedType", "") or "")
    contours: dict[int, list[Contour]] = {}
    for item in ds.get("ROIContourSequence", []) or []:
        if "ReferencedROINumber" not in item:
            raise InputError("an ROI Contour item has no ReferencedROINumber", path,
                             "ROIContourSequence")
        num = int(item.ReferencedROINumber)
        lst = contours.setdefault(num, [])
        for c in item.get("ContourSequence", []) or []:
            gtype = str(c.get("ContourGeometricType", "") or "").upper()
            data = _contour_values(c, path, num)
            if data.size == 0:
                continue
            if data.size % 3:
                raise InputError(
                    f"ROI {num}: ContourData has {data.size} values, not a multiple of 3",
                    path, "ContourData")
            pts = data.reshape(-1, 3)
            lst.append(Contour(gtype, pts))
    rois = []
    for item in rois_seq:
        num = int(_require(item, "ROINumber", path))
        rois.append(
            ROI(
                number=num,
                name=str(item.get("ROIName", "") or f"ROI {num}"),
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


def _contour_values(item: pydicom.Dataset, path: Path, roi_number: int) -> np.ndarray:
    """ContourData as floats, parsed straight from the raw bytes when possible."""
    tag = 0x30060050
    if tag not in item:
        return np.zeros(0)
    elem = item.get_item(tag)
    raw = getattr(elem, "value", None)
    try:
        if isinstance(raw, bytes | bytearray):
            text = raw.decode("ascii").replace("\\", " ")
            return np.array(text.split(), dtype=float)
        return np.asarray([float(v) for v in item.ContourData], dtype=float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"ROI {roi_number}: ContourData is not a list of numbers ({exc})",
                         path, "ContourData") from exc


# ---------------------------------------------------------------------- plan
def read_plan(path: str | Path) -> PlanInfo:
    """Prescription (dose levels and fractions) from an RTPLAN."""
    path = Path(path)
    ds = _read(path)
    fractions = None
    fgs = ds.get("FractionGroupSequence")
    if fgs:
        n = fgs[0].get("NumberOfFractionsPlanned")
        if n is not None and int(n) > 0:
            fractions = int(n)
    rx = []
    for i, item in enumerate(ds.get("DoseReferenceSequence", []) or [], start=1):
        dose = item.get("TargetPrescriptionDose")
        if dose is None:
            continue
        name = str(item.get("DoseReferenceDescription", "") or f"Dose reference {i}")
        rx.append(Prescription(name, float(dose), fractions))
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
    """
    path = Path(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out: dict[int, DVH] = {}
    for item in ds.get("DVHSequence", []) or []:
        if str(item.get("DoseUnits", "")).upper() != "GY":
            continue
        if str(item.get("DVHVolumeUnits", "")).upper() != "CM3":
            continue
        refs = item.get("DVHReferencedROISequence")
        if not refs:
            continue
        roi = int(refs[0].ReferencedROINumber)
        data = np.asarray([float(v) for v in item.DVHData], dtype=float).reshape(-1, 2)
        scale = float(item.get("DVHDoseScaling", 1.0) or 1.0)
        widths, vols = data[:, 0] * scale, data[:, 1]
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

"""Reading one RTDOSE file into a canonical dose grid (Gy), every attribute checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from dvheval.dicom.attributes import (
    MAX_COORDINATE_MM,
    dataset_from_bytes,
    floats,
    integer,
    read_file_bytes,
    require,
    required_integer,
    sha256_while,
)
from dvheval.dicom.completeness import PIXEL_DATA, UNDEFINED, walk_encoded
from dvheval.dicom.files import RTDOSE_SOP
from dvheval.dicom.grid import CanonicalGrid, canonicalize, dicom_affine, median_step
from dvheval.dicom.info import DoseInfo
from dvheval.errors import InputError

#: What the completeness walk of an RTDOSE records: its (top-level) pixel data.
_PIXEL_DATA = frozenset({(PIXEL_DATA, 0)})
#: DoseSummationType values of a dose delivered in one session, not the whole course.
SESSION_SUMMATIONS = frozenset({"FRACTION_SESSION", "BEAM_SESSION", "BRACHY_SESSION",
                                "CONTROL_POINT"})
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
#: Largest dose grid (voxels) that is read.
MAX_GRID_VOXELS = 2**31
#: Tolerance on the unit length and orthogonality of ImageOrientationPatient.
ORIENTATION_TOLERANCE = 1.0e-3
#: Enumerated values of DoseSummationType (DICOM PS3.3 C.8.8.3).
DOSE_SUMMATION_TYPES = frozenset({
    "PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION",
    "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD"})



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
class DoseFile:
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
    #: SHA-256 of the file's bytes, as read.
    sha256: str


def read_dose_file(path: str | Path, relative_reference_gy: float | None = None) -> DoseFile:
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

    Notes
    -----
    Longer than 60 lines only because this docstring lists every check; the
    checks themselves are in the helpers it calls.
    """
    path = Path(path)
    buf = read_file_bytes(path)
    with sha256_while(buf) as digest:
        ds, pixels = _dataset_and_pixels(buf, path)
        return _dose_file(ds, path, relative_reference_gy, digest, pixels)


def _dataset_and_pixels(buf: bytes, path: Path) -> tuple[pydicom.Dataset, memoryview | None]:
    """The data set encoded in ``buf`` (the bytes of ``path``), refused when cut
    short (:func:`~dvheval.dicom.completeness.walk_encoded`), and its pixel data.

    Native (uncompressed) pixel data is a view into ``buf``, and the data set
    is read without it: pydicom would copy it (12 MB for a clinical dose
    grid). Otherwise the view is None and the data set holds the pixel data.
    """
    walked = walk_encoded(buf, path, _PIXEL_DATA)
    if walked is not None:
        events, spans = walked
        if (len(events) == 1 and events[0][0] == PIXEL_DATA and events[0][3] == 0
                and events[0][2] != UNDEFINED and PIXEL_DATA in spans):
            _, start, length, _ = events[0]
            first, last = spans[PIXEL_DATA]
            ds = dataset_from_bytes(buf[:first] + buf[last:], path)
            if not _compressed(ds):
                return ds, memoryview(buf)[start:start + length]
    return dataset_from_bytes(buf, path), None


def _compressed(ds: pydicom.Dataset) -> bool:
    """Whether the file meta's transfer syntax says the pixel data is compressed."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return syntax is not None and bool(syntax.is_compressed)


def _dose_file(ds: pydicom.Dataset, path: Path, relative_reference_gy: float | None,
               digest: Callable[[], str], pixels: memoryview | None = None) -> DoseFile:
    """:func:`read_dose_file` of the dataset read from ``path`` (``pixels``: its
    native pixel data, when not in ``ds``; see :func:`_dataset_and_pixels`)."""
    if str(ds.get("SOPClassUID", "")) != RTDOSE_SOP and ds.get("Modality") != "RTDOSE":
        raise InputError("not an RT Dose object", path, "SOPClassUID")
    units = _dose_units(ds, path, relative_reference_gy)
    summation = _summation_type(ds, path)
    ipp, iop, spacing = _image_plane(ds, path)
    scaling = float(floats(ds, "DoseGridScaling", path, 1)[0])
    if not 0.0 < scaling <= MAX_DOSE_GY:
        raise InputError(f"is {scaling:g}; it must be greater than 0 and at most "
                         f"{MAX_DOSE_GY:g} (Gy per stored unit)", path, "DoseGridScaling")
    stored = _stored_values(ds, path, pixels)
    nframes = stored.shape[0]
    if nframes < 2:
        raise InputError("a single-frame RT Dose is a plane, not a volume; a DVH needs a 3-D "
                         "dose grid", path, "NumberOfFrames")
    factor = scaling * (float(relative_reference_gy or 0.0) if units == "RELATIVE" else 1.0)
    _check_dose_range(stored, scaling, factor, path)
    values = np.multiply(stored, factor, dtype=np.float32)
    offsets = _frame_offsets(ds, path, nframes, ipp, iop)
    try:
        canon, grid = canonicalize(values, ipp, iop, spacing, offsets)
    except ValueError as exc:
        raise InputError(str(exc), path, "ImageOrientationPatient") from exc
    step = median_step(offsets)
    affine = dicom_affine(ipp, iop, spacing, step)
    plan_uid, fraction_group, beam = _referenced_plan(ds, path)
    for_uid = str(require(ds, "FrameOfReferenceUID", path))
    return DoseFile(
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
        sha256=digest(),
    )


def _dose_units(ds: pydicom.Dataset, path: Path, relative_reference_gy: float | None) -> str:
    """DoseUnits, GY or RELATIVE (then only with the dose a relative 1.0 stands for)."""
    units = str(require(ds, "DoseUnits", path)).strip().upper()
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
    return units


def _summation_type(ds: pydicom.Dataset, path: Path) -> str:
    """DoseSummationType (upper case, '' when absent): known, and not a single session."""
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
    return summation


def _image_plane(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImagePositionPatient, ImageOrientationPatient and PixelSpacing, checked."""
    ipp = floats(ds, "ImagePositionPatient", path, 3)
    if np.any(np.abs(ipp) > MAX_COORDINATE_MM):
        raise InputError(f"position {ipp.tolist()} mm is implausible (a coordinate beyond "
                         f"{MAX_COORDINATE_MM:g} mm)", path, "ImagePositionPatient")
    iop = floats(ds, "ImageOrientationPatient", path, 6)
    row, col = iop[:3], iop[3:]
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    dot = float(np.dot(row, col))
    if max(abs(n - 1.0) for n in norms) > ORIENTATION_TOLERANCE or abs(dot) > \
            ORIENTATION_TOLERANCE:
        raise InputError(
            f"row and column directions {row.tolist()}, {col.tolist()} must be orthogonal "
            f"unit vectors (lengths {norms[0]:.4g}, {norms[1]:.4g}; dot product {dot:.3g})",
            path, "ImageOrientationPatient")
    spacing = floats(ds, "PixelSpacing", path, 2)
    lo, hi = _spacing_bounds()
    if np.any(spacing < lo) or np.any(spacing > hi):
        raise InputError(f"{spacing.tolist()} mm is not a plausible dose pixel size (each "
                         f"value must be from {lo:g} to {hi:g} mm)", path, "PixelSpacing")
    return ipp, iop, spacing


def _spacing_bounds() -> tuple[float, float]:
    """:data:`SPACING_RANGE_MM` widened by rounding (steps are differences of offsets)."""
    lo, hi = SPACING_RANGE_MM
    return lo * (1 - 1e-6), hi * (1 + 1e-6)


def _stored_values(ds: pydicom.Dataset, path: Path, pixels: memoryview | None = None
                   ) -> np.ndarray:
    """The stored pixel values ``[frame, row, col]`` as integers, unmasked and checked.

    Uncompressed pixel data (``pixels``, else ``ds.PixelData``) is read
    straight from the bytes, so that values which do not fit in BitsStored
    are seen (pydicom would mask their high bits and shrink the dose) and
    refused.
    """
    rows = required_integer(ds, "Rows", path, lo=1)
    cols = required_integer(ds, "Columns", path, lo=1)
    frames = integer(ds, "NumberOfFrames", path, required=False, lo=1) or 1
    samples = required_integer(ds, "SamplesPerPixel", path)
    if samples != 1:
        raise InputError(f"is {samples}; a dose grid has one value per voxel (1)", path,
                         "SamplesPerPixel")
    allocated = required_integer(ds, "BitsAllocated", path)
    if allocated not in (8, 16, 32):
        raise InputError(f"is {allocated}; a dose grid uses 8, 16 or 32 bits", path,
                         "BitsAllocated")
    bits = required_integer(ds, "BitsStored", path, lo=1, hi=allocated)
    high = required_integer(ds, "HighBit", path)
    if high != bits - 1:
        raise InputError(f"is {high}, but BitsStored {bits} needs HighBit {bits - 1}", path,
                         "HighBit")
    signed = required_integer(ds, "PixelRepresentation", path, lo=0, hi=1) == 1
    voxels = rows * cols * frames
    if voxels > MAX_GRID_VOXELS:
        raise InputError(f"the grid of {cols} x {rows} x {frames} = {voxels} voxels is larger "
                         f"than the {MAX_GRID_VOXELS} voxels that can be read", path,
                         "NumberOfFrames")
    if pixels is None:
        require(ds, "PixelData", path)
    elif len(pixels) == 0:
        raise InputError("required attribute is missing or empty", path, "PixelData")
    if _compressed(ds):
        stored = _decoded_values(ds, path, voxels)
    else:
        data = ds.PixelData if pixels is None else pixels
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


#: Largest difference (mm) between the first absolute frame position and the
#: z of ImagePositionPatient (DS rounding), beyond which the two contradict.
FRAME_POSITION_TOLERANCE_MM = 0.01


def _frame_offsets(ds: pydicom.Dataset, path: Path, nframes: int, ipp: np.ndarray,
                   iop: np.ndarray) -> np.ndarray:
    """GridFrameOffsetVector relative to the first frame, checked."""
    key = "GridFrameOffsetVector"
    if ds.get(key) is None:
        raise InputError("required for a multi-frame dose", path, key)
    offsets = floats(ds, key, path)
    if offsets.size != nframes:
        raise InputError(f"has {offsets.size} values for {nframes} frames", path, key)
    normal = np.cross(iop[:3], iop[3:])
    if offsets[0] != 0.0:
        # absolute form: the values are patient z of each frame (axial grids only)
        if abs(abs(normal[2]) - 1.0) > 1e-4:
            raise InputError("absolute frame offsets (first value not 0) are only defined "
                             "for axial grids", path, key)
        # the first frame is at ImagePositionPatient: its z must be the first value
        if abs(offsets[0] - ipp[2]) > FRAME_POSITION_TOLERANCE_MM:
            raise InputError(
                f"the first value {offsets[0]:g} mm is not 0 (relative offsets) and not the "
                f"z of ImagePositionPatient ({ipp[2]:g} mm, absolute positions): the two "
                "attributes place the dose differently, and either may be wrong", path, key)
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
        number = integer(fgs[0], "ReferencedFractionGroupNumber", path, required=False)
        fraction_group = "" if number is None else str(number)
        beams = fgs[0].get("ReferencedBeamSequence")
        if beams:
            number = integer(beams[0], "ReferencedBeamNumber", path, required=False)
            beam = "" if number is None else str(number)
    return plan_uid, fraction_group, beam



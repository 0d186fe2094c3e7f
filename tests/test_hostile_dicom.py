"""Damaged and hostile DICOM input is refused at load time with a located error.

Each case edits a copy of the shipped sample plan (RTDOSE, RTSTRUCT, RTPLAN)
and checks that the value is refused with an :class:`InputError` naming the
file and the attribute, instead of giving a wrong number or a traceback.
Values pydicom would refuse to encode (``nan``, ``abc``, ``2.5`` for an
integer) are written as raw element bytes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from dvheval import compute_dvhs
from dvheval.dicom import read_dose_file, read_plan, read_structure_set
from dvheval.engine.stored import read_stored_dvhs
from dvheval.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
SPEED = {"structures": ["SpinalCord", "PTV40"], "metrics": ["Dmax", "D98%", "Dmean"]}
CORD = 6  # ROI number of SpinalCord in the sample structure set


# -------------------------------------------------------------------- editing
def set_raw(item: pydicom.Dataset, keyword: str, text: str | bytes) -> None:
    """Store ``text`` as the raw bytes of ``keyword`` (explicit VR little endian)."""
    tag = Tag(tag_for_keyword(keyword))
    value = text.encode("ascii") if isinstance(text, str) else text
    if len(value) % 2:
        value += b" "
    item[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def edited(tmp_path: Path, name: str, edit: Callable[[pydicom.Dataset], None]) -> Path:
    """Copy the sample plan, apply ``edit`` to one of its files; the copied file."""
    folder = tmp_path / "plan"
    shutil.copytree(SAMPLE, folder)
    target = folder / name
    ds = pydicom.dcmread(target)
    edit(ds)
    ds.save_as(target)
    return target


def refused(target: Path, attribute: str, match: str | None = None) -> InputError:
    """compute_dvhs on the folder of ``target`` raises an InputError at ``target``."""
    with pytest.raises(InputError) as err:
        compute_dvhs([target.parent], **SPEED)
    exc = err.value
    assert exc.path == target, str(exc)
    assert exc.attribute == attribute, str(exc)
    assert str(target) in str(exc) and attribute in str(exc)
    if match is not None:
        assert match in exc.message, exc.message
    return exc


def raw_pixels(ds: pydicom.Dataset) -> np.ndarray:
    return np.frombuffer(ds.PixelData, dtype="<u2")


def contour(ds: pydicom.Dataset, roi: int = CORD, k: int = 0) -> pydicom.Dataset:
    item = next(i for i in ds.ROIContourSequence if int(i.ReferencedROINumber) == roi)
    return item.ContourSequence[k]


def dose_ref(ds: pydicom.Dataset, k: int = 0) -> pydicom.Dataset:
    return ds.DoseReferenceSequence[k]


# ------------------------------------------------------------ RTDOSE scaling
@pytest.mark.parametrize("value", ["-0.000626", "0", "nan", "inf", "-inf", "1e-300", "1e300",
                                   "1e-12", "0.5", "abc", "1\\2"])
def test_implausible_dose_grid_scaling_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: set_raw(ds, "DoseGridScaling", value))
    refused(target, "DoseGridScaling")


def test_scaling_that_makes_every_dose_vanish_names_the_maximum(tmp_path):
    # the sample's highest stored value is 65535: 65535 x 1e-300 Gy is 6.6e-296 Gy
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: set_raw(ds, "DoseGridScaling", "1e-300"))
    exc = refused(target, "DoseGridScaling")
    assert "65535" in exc.message and "below 0.001 Gy" in exc.message


@pytest.mark.parametrize(("value", "error"), [("1e-300", False), ("0.000626", False),
                                              ("1e300", True), ("1e38", True)])
def test_scaling_of_an_all_zero_grid(tmp_path, value, error):
    """A zero dose stays zero; a scaling beyond float range would make 0 x inf = NaN."""
    def zero(ds):
        ds.PixelData = bytes(len(ds.PixelData))
        set_raw(ds, "DoseGridScaling", value)
    target = edited(tmp_path, "RTDOSE.dcm", zero)
    if error:
        refused(target, "DoseGridScaling", "at most 10000")
    else:
        values = read_dose_file(target).values
        assert np.all(values == 0.0)


# -------------------------------------------------------------- pixel format
def test_bits_stored_smaller_than_the_stored_values_is_refused(tmp_path):
    """pydicom would mask 16-bit values to 12 bits and shrink the dose about 16-fold."""
    def twelve(ds):
        ds.BitsStored = 12
        ds.HighBit = 11
    target = edited(tmp_path, "RTDOSE.dcm", twelve)
    ds = pydicom.dcmread(target)
    assert int(ds.pixel_array.max()) <= 4095 < int(raw_pixels(ds).max())  # the trap
    exc = refused(target, "BitsStored")
    assert "65535" in exc.message and "4095" in exc.message


def test_bits_stored_that_fits_the_values_is_read_unchanged(tmp_path):
    def fitting(ds):
        values = (raw_pixels(ds) // 16).astype("<u2")
        ds.PixelData = values.tobytes()
        ds.BitsStored = 12
        ds.HighBit = 11
        set_raw(ds, "DoseGridScaling", repr(float(ds.DoseGridScaling) * 16))
    target = edited(tmp_path, "RTDOSE.dcm", fitting)
    ref = read_dose_file(SAMPLE / "RTDOSE.dcm").values
    got = read_dose_file(target).values
    # 16 x coarser steps of 0.000627 Gy: within one new step (0.01 Gy)
    assert np.max(np.abs(got - ref)) <= 16 * 0.00062651512463 + 1e-6


@pytest.mark.parametrize(("keyword", "value", "attribute"), [
    ("HighBit", 14, "HighBit"),
    ("BitsStored", 17, "BitsStored"),
    ("BitsStored", 0, "BitsStored"),
    ("BitsAllocated", 12, "BitsAllocated"),
    ("SamplesPerPixel", 3, "SamplesPerPixel"),
    ("PixelRepresentation", 2, "PixelRepresentation"),
])
def test_inconsistent_pixel_format_is_refused(tmp_path, keyword, value, attribute):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: setattr(ds, keyword, value))
    refused(target, attribute)


def test_negative_signed_dose_values_are_refused(tmp_path):
    # stored values above 32767 read as signed 16-bit are negative
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: setattr(ds, "PixelRepresentation", 1))
    exc = refused(target, "PixelData", "negative")
    low = int(np.frombuffer(pydicom.dcmread(target).PixelData, "<i2").min())
    assert low < 0 and f"down to {low})" in exc.message


def test_signed_grid_without_negative_values_gives_the_same_dose(tmp_path):
    def signed(ds):
        ds.PixelData = (raw_pixels(ds) // 2).astype("<i2").tobytes()
        ds.PixelRepresentation = 1
        ds.BitsStored = 16
        set_raw(ds, "DoseGridScaling", repr(float(ds.DoseGridScaling) * 2))
    target = edited(tmp_path, "RTDOSE.dcm", signed)
    ref = read_dose_file(SAMPLE / "RTDOSE.dcm").values
    got = read_dose_file(target).values
    assert np.max(np.abs(got - ref)) <= 2 * 0.00062651512463 + 1e-6


@pytest.mark.parametrize(("keyword", "value"), [
    ("Rows", 100), ("Columns", 138), ("NumberOfFrames", 60), ("BitsAllocated", 32),
])
def test_image_size_that_does_not_match_pixel_data_is_refused(tmp_path, keyword, value):
    def change(ds):
        if keyword == "BitsAllocated":
            ds.HighBit, ds.BitsStored = 15, 16
        if keyword == "NumberOfFrames":
            set_raw(ds, "NumberOfFrames", str(value))
            set_raw(ds, "GridFrameOffsetVector", "\\".join(
                str(v) for v in list(ds.GridFrameOffsetVector)[:value]))
        else:
            setattr(ds, keyword, value)
    target = edited(tmp_path, "RTDOSE.dcm", change)
    exc = refused(target, "PixelData")
    # 99 x 139 x 61 frames x 2 bytes
    assert "holds 1678842 bytes" in exc.message
    assert "bytes, but Rows x Columns x NumberOfFrames" in exc.message


def test_truncated_pixel_data_is_refused(tmp_path):
    def cut(ds):
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    target = edited(tmp_path, "RTDOSE.dcm", cut)
    exc = refused(target, "PixelData")
    assert "holds 839422 bytes" in exc.message and "= 1678842 bytes" in exc.message


def test_grid_of_more_than_2_to_31_voxels_is_refused_before_reading(tmp_path):
    def huge(ds):
        ds.Rows = ds.Columns = 65535
    target = edited(tmp_path, "RTDOSE.dcm", huge)
    exc = refused(target, "NumberOfFrames")
    assert "261985009725 voxels" in exc.message  # 65535 * 65535 * 61


@pytest.mark.parametrize("value", ["abc", "0", "-61", "2.5"])
def test_number_of_frames_not_a_positive_whole_number_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: set_raw(ds, "NumberOfFrames", value))
    refused(target, "NumberOfFrames")


# --------------------------------------------------------------- dose geometry
@pytest.mark.parametrize("value", ["2.5", "0\\2.5", "-2.5\\2.5", "nan\\2.5", "2.5\\inf",
                                   "0.001\\2.5", "2.5\\60", "abc\\2.5", "2.5\\2.5\\2.5"])
def test_implausible_pixel_spacing_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: set_raw(ds, "PixelSpacing", value))
    refused(target, "PixelSpacing")


def _offsets(edit: Callable[[list[str]], list[str]]) -> Callable[[pydicom.Dataset], None]:
    def apply(ds):
        values = [str(v) for v in ds.GridFrameOffsetVector]
        set_raw(ds, "GridFrameOffsetVector", "\\".join(edit(values)))
    return apply


@pytest.mark.parametrize(("edit", "match"), [
    (lambda v: v[:-1], "has 60 values for 61 frames"),
    (lambda v: [*v[:5], "nan", *v[6:]], "not a finite number"),
    (lambda v: [*v[:5], "inf", *v[6:]], "not a finite number"),
    (lambda v: [*v[:5], v[7], v[6], v[5], *v[8:]], "not monotonic"),
    (lambda v: [f"{float(x) * 1e-3:.6f}" for x in v], "not plausible"),
    (lambda v: [f"{float(x) * 40:g}" for x in v], "not plausible"),
    (lambda v: [*v[:5], v[4], *v[6:]], "repeat a position"),
])
def test_implausible_grid_frame_offsets_are_refused(tmp_path, edit, match):
    target = edited(tmp_path, "RTDOSE.dcm", _offsets(edit))
    refused(target, "GridFrameOffsetVector", match)


@pytest.mark.parametrize("value", ["nan\\-122.5\\-75", "-172.5\\inf\\-75", "-172.5\\-122.5\\2e5",
                                   "-172.5\\-122.5"])
def test_implausible_image_position_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTDOSE.dcm",
                    lambda ds: set_raw(ds, "ImagePositionPatient", value))
    refused(target, "ImagePositionPatient")


@pytest.mark.parametrize("value", ["1\\0\\0\\0\\nan\\0", "2\\0\\0\\0\\1\\0", "1\\0\\0\\1\\0\\0",
                                   "1\\0\\0\\0.7071068\\0.7071068\\0", "0\\0\\0\\0\\0\\0",
                                   "1\\0\\0\\0\\1"])
def test_orientation_that_is_not_two_orthogonal_unit_vectors_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTDOSE.dcm",
                    lambda ds: set_raw(ds, "ImageOrientationPatient", value))
    refused(target, "ImageOrientationPatient")


# ------------------------------------------------------------- dose attributes
def test_unknown_dose_summation_type_is_refused(tmp_path):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: setattr(ds, "DoseSummationType", "SUM"))
    refused(target, "DoseSummationType", "unknown DoseSummationType 'SUM'")


def test_unknown_dose_units_are_refused(tmp_path):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: setattr(ds, "DoseUnits", "CGY"))
    refused(target, "DoseUnits")


def test_referenced_plan_item_without_uid_is_refused(tmp_path):
    def drop(ds):
        del ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    target = edited(tmp_path, "RTDOSE.dcm", drop)
    refused(target, "ReferencedRTPlanSequence", "no ReferencedSOPInstanceUID")


# ------------------------------------------------------------------ RTSTRUCT
@pytest.mark.parametrize(("edit", "attribute", "match"), [
    (lambda c: set_raw(c, "ContourData", b""), "ContourData", "no points"),
    (lambda c: delattr(c, "ContourData"), "ContourData", "no points"),
    (lambda c: set_raw(c, "ContourData", "1\\2\\3\\4"), "ContourData", "not a multiple of 3"),
    (lambda c: set_raw(c, "ContourData", "1\\nan\\3\\4\\5\\6\\7\\8\\9"), "ContourData",
     "not a finite number"),
    (lambda c: set_raw(c, "ContourData", "1\\2\\inf\\4\\5\\6\\7\\8\\9"), "ContourData",
     "not a finite number"),
    (lambda c: set_raw(c, "ContourData", "-2e5\\0\\3\\2e5\\0\\3\\0\\2e5\\3"), "ContourData",
     "200000 mm"),
    (lambda c: set_raw(c, "ContourData", "-200000\\0\\3\\200000.0\\0\\3\\0\\2\\3"),
     "ContourData", "200000 mm"),
    (lambda c: set_raw(c, "ContourData", "1\\2\\x\\4\\5\\6"), "ContourData", "not a list"),
    (lambda c: setattr(c, "NumberOfContourPoints", int(c.NumberOfContourPoints) + 1),
     "NumberOfContourPoints", "ContourData holds"),
    (lambda c: set_raw(c, "NumberOfContourPoints", "many"), "NumberOfContourPoints",
     "not a whole number"),
])
def test_damaged_contour_data_names_the_roi(tmp_path, edit, attribute, match):
    target = edited(tmp_path, "RTSTRUCT.dcm", lambda ds: edit(contour(ds)))
    exc = refused(target, attribute, match)
    assert "ROI 6 'SpinalCord'" in exc.message


def test_contours_under_an_undefined_roi_number_are_refused(tmp_path):
    """The cord's contours filed under ROI 99 would leave the cord 'empty'."""
    def renumber(ds):
        item = next(i for i in ds.ROIContourSequence if int(i.ReferencedROINumber) == CORD)
        item.ReferencedROINumber = 99
    target = edited(tmp_path, "RTSTRUCT.dcm", renumber)
    exc = refused(target, "ReferencedROINumber")
    assert "99" in exc.message and "'SpinalCord'" in exc.message


def test_extra_contours_of_an_undefined_roi_are_left_alone_when_every_roi_has_contours(
        tmp_path):
    def extra(ds):
        ds.StructureSetROISequence = [i for i in ds.StructureSetROISequence
                                      if i.ROIName != "Duodenum"]
        ds.ROIContourSequence = [i for i in ds.ROIContourSequence
                                 if i.get("ContourSequence")]
        orphan = pydicom.Dataset()
        orphan.ReferencedROINumber = 99
        orphan.ContourSequence = [contour(ds)]
        ds.ROIContourSequence.append(orphan)
    target = edited(tmp_path, "RTSTRUCT.dcm", extra)
    got = compute_dvhs([target.parent], **SPEED)
    ref = compute_dvhs([SAMPLE], **SPEED)
    assert got.structure("SpinalCord").metrics == ref.structure("SpinalCord").metrics


@pytest.mark.parametrize("value", ["abc", "2.5", ""])
def test_roi_number_that_is_not_a_whole_number_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTSTRUCT.dcm",
                    lambda ds: set_raw(ds.StructureSetROISequence[5], "ROINumber", value))
    refused(target, "ROINumber")


def test_duplicate_roi_number_is_refused(tmp_path):
    def dup(ds):
        ds.StructureSetROISequence[6].ROINumber = CORD
    target = edited(tmp_path, "RTSTRUCT.dcm", dup)
    refused(target, "ROINumber", "used by both 'SpinalCord' and 'Kidney_L'")


@pytest.mark.parametrize("sequence", ["ROIContourSequence", "RTROIObservationsSequence"])
def test_referenced_roi_number_that_is_not_a_whole_number_is_refused(tmp_path, sequence):
    target = edited(tmp_path, "RTSTRUCT.dcm",
                    lambda ds: set_raw(ds[sequence][0], "ReferencedROINumber", "one"))
    refused(target, "ReferencedROINumber")


# -------------------------------------------------------------------- RTPLAN
@pytest.mark.parametrize("value", ["abc", "2.5", "0", "-10", "1001", "99999999999"])
def test_implausible_number_of_fractions_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTPLAN.dcm", lambda ds: set_raw(
        ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", value))
    refused(target, "NumberOfFractionsPlanned")


@pytest.mark.parametrize("value", ["nan", "inf", "-40", "0", "1000.5", "4000", "forty"])
def test_implausible_prescription_dose_is_refused(tmp_path, value):
    target = edited(tmp_path, "RTPLAN.dcm", lambda ds: set_raw(
        dose_ref(ds), "TargetPrescriptionDose", value))
    refused(target, "TargetPrescriptionDose")


def test_plausible_plan_values_are_read(tmp_path):
    def edit(ds):
        set_raw(ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", "1000")
        set_raw(dose_ref(ds), "TargetPrescriptionDose", "1000")
    plan = read_plan(edited(tmp_path, "RTPLAN.dcm", edit))
    assert plan.fractions == 1000
    assert plan.prescriptions[0].dose_gy == 1000.0


# --------------------------------------------------------------- stored DVHs
def _with_dvh(ds: pydicom.Dataset, data: str, scaling: str = "1") -> None:
    ref = pydicom.Dataset()
    ref.ReferencedROINumber = CORD
    item = pydicom.Dataset()
    item.DVHReferencedROISequence = [ref]
    item.DVHType = "CUMULATIVE"
    item.DoseUnits = "GY"
    item.DoseType = "PHYSICAL"
    item.DVHVolumeUnits = "CM3"
    item.DVHNumberOfBins = len(data.split("\\")) // 2
    set_raw(item, "DVHDoseScaling", scaling)
    set_raw(item, "DVHData", data)
    ds.DVHSequence = [item]


def test_stored_dvh_is_read(tmp_path):
    # the last volume is rounding noise as planning systems store it
    target = edited(tmp_path, "RTDOSE.dcm",
                    lambda ds: _with_dvh(ds, "1\\10\\1\\4\\1\\-3e-13"))
    dvh = read_stored_dvhs(target)[CORD]
    # 6 cc in the first 1 Gy bin, 4 cc in the second
    assert dvh.total_cc == pytest.approx(10.0)
    assert dvh.mean_gy == pytest.approx((6 * 0.5 + 4 * 1.5) / 10)


@pytest.mark.parametrize(("data", "scaling", "attribute"), [
    ("1\\10\\1", "1", "DVHData"),
    ("1\\nan\\1\\4", "1", "DVHData"),
    ("-1\\10\\1\\4", "1", "DVHData"),
    ("1\\10\\1\\-0.5", "1", "DVHData"),
    ("1\\10\\1\\4", "0", "DVHDoseScaling"),
    ("1\\10\\1\\4", "inf", "DVHDoseScaling"),
])
def test_damaged_stored_dvh_is_refused(tmp_path, data, scaling, attribute):
    target = edited(tmp_path, "RTDOSE.dcm", lambda ds: _with_dvh(ds, data, scaling))
    with pytest.raises(InputError) as err:
        read_stored_dvhs(target)
    assert err.value.path == target and err.value.attribute == attribute


# ------------------------------------------------------------ mutation loop
HOSTILE_TEXT = ["", "abc", "nan", "-inf", "1e400", "0", "-1", "1e-300", "1e300", "2.5",
                "1\\2\\3\\4\\5\\6\\7", "99999999999"]
HOSTILE_INT = [0, 1, 7, 12, 15, 17, 33, 65535]

#: (file, path to the item holding the attribute, keyword, kind)
MUTATED = [
    ("RTDOSE.dcm", (), "DoseGridScaling", "text"),
    ("RTDOSE.dcm", (), "PixelSpacing", "text"),
    ("RTDOSE.dcm", (), "GridFrameOffsetVector", "text"),
    ("RTDOSE.dcm", (), "ImagePositionPatient", "text"),
    ("RTDOSE.dcm", (), "ImageOrientationPatient", "text"),
    ("RTDOSE.dcm", (), "NumberOfFrames", "text"),
    ("RTDOSE.dcm", (), "DoseUnits", "text"),
    ("RTDOSE.dcm", (), "DoseSummationType", "text"),
    ("RTDOSE.dcm", ("ReferencedRTPlanSequence", 0), "ReferencedSOPInstanceUID", "text"),
    ("RTDOSE.dcm", (), "Rows", "int"),
    ("RTDOSE.dcm", (), "Columns", "int"),
    ("RTDOSE.dcm", (), "BitsAllocated", "int"),
    ("RTDOSE.dcm", (), "BitsStored", "int"),
    ("RTDOSE.dcm", (), "HighBit", "int"),
    ("RTDOSE.dcm", (), "PixelRepresentation", "int"),
    ("RTDOSE.dcm", (), "SamplesPerPixel", "int"),
    ("RTSTRUCT.dcm", ("ROIContourSequence", 5, "ContourSequence", 3), "ContourData", "text"),
    ("RTSTRUCT.dcm", ("ROIContourSequence", 5, "ContourSequence", 3), "NumberOfContourPoints",
     "text"),
    ("RTSTRUCT.dcm", ("ROIContourSequence", 5), "ReferencedROINumber", "text"),
    ("RTSTRUCT.dcm", ("StructureSetROISequence", 5), "ROINumber", "text"),
    ("RTSTRUCT.dcm", ("RTROIObservationsSequence", 5), "ReferencedROINumber", "text"),
    ("RTPLAN.dcm", ("FractionGroupSequence", 0), "NumberOfFractionsPlanned", "text"),
    ("RTPLAN.dcm", ("DoseReferenceSequence", 0), "TargetPrescriptionDose", "text"),
]


def _item(ds: pydicom.Dataset, where: tuple) -> pydicom.Dataset:
    for k in range(0, len(where), 2):
        ds = ds[where[k]].value[where[k + 1]]
    return ds


def _assert_finite(plan) -> None:
    text = json.dumps(plan.to_dict(), allow_nan=False)  # raises on NaN or inf
    assert json.loads(text)["structures"]
    for s in plan.structures:
        for value in s.metrics.values():
            assert value is None or math.isfinite(value)


@pytest.mark.parametrize(("name", "where", "keyword", "kind"), MUTATED,
                         ids=[f"{m[0]}-{m[2]}" for m in MUTATED])
def test_hostile_values_give_finite_numbers_or_a_located_error(tmp_path, name, where,
                                                                 keyword, kind):
    values = HOSTILE_TEXT if kind == "text" else HOSTILE_INT
    outcomes = []
    for i, value in enumerate(values):
        def edit(ds, value=value):
            item = _item(ds, where)
            if kind == "text":
                set_raw(item, keyword, value)
            else:
                setattr(item, keyword, value)
        target = edited(tmp_path / str(i), name, edit)
        try:
            plan = compute_dvhs([target.parent], **SPEED)
        except InputError as exc:
            assert exc.path == target, f"{value!r}: {exc}"
            assert str(target) in str(exc)
            outcomes.append("refused")
        else:
            _assert_finite(plan)
            outcomes.append("ok")
    assert "refused" in outcomes


def test_clean_sample_plan_gives_valid_json_without_nan():
    plan = compute_dvhs([SAMPLE])
    _assert_finite(plan)
    assert plan.dose.max_gy == pytest.approx(41.0587, abs=1e-3)
    assert read_structure_set(SAMPLE / "RTSTRUCT.dcm").rois[5].name == "SpinalCord"


# ------------------------------------------------- huge but finite geometry
def _unit_grid(n: int = 10):
    from dvheval.engine.geometry import CanonicalGrid

    c = np.arange(n, dtype=float)  # voxel centres 0..n-1 mm, edges -0.5..n-0.5
    return CanonicalGrid(x=c, y=c, z=c.copy()), np.full((n, n, n), 2.0, np.float32)


def test_contour_metres_wide_is_sampled_near_the_grid_only():
    """A 180 m square (coordinates within the plausible bound) used to exhaust memory."""
    from dvheval.engine.sampling import sample_structure

    grid, dose = _unit_grid()
    half = 9.0e4
    square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    samples, _ = sample_structure([(4.0, [square])], dose, grid, thickness=2.0)
    assert samples.total_cc == pytest.approx((2 * half) ** 2 * 2.0 / 1000.0)
    # covered: the grid's 10 x 10 mm in-plane extent over the 2 mm slab
    assert samples.weights_cc.sum() == pytest.approx(10 * 10 * 2 / 1000.0, rel=1e-9)
    assert samples.doses_gy.size < samples.n_samples
    assert np.all(samples.doses_gy == pytest.approx(2.0))


def test_slab_far_beyond_the_grid_in_z_counts_as_uncovered():
    from dvheval.engine.sampling import sample_structure

    grid, dose = _unit_grid()
    square = np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0], [2.0, 6.0]])
    samples, _ = sample_structure([(4.0, [square])], dose, grid, thickness=2.0e5)
    assert samples.total_cc == pytest.approx(16 * 2.0e5 / 1000.0)
    # covered: 16 mm^2 over the grid's 10 mm z extent
    assert samples.weights_cc.sum() == pytest.approx(16 * 10 / 1000.0, rel=1e-9)
    assert samples.doses_gy.size < samples.n_samples


def test_wide_contour_in_the_sample_plan_is_partial_not_a_crash(tmp_path):
    def widen(ds):
        c = contour(ds)
        z = float(c.ContourData[2])
        pts = [(-9e4, -9e4), (9e4, -9e4), (9e4, 9e4), (-9e4, 9e4)]
        set_raw(c, "ContourData", "\\".join(f"{x:g}\\{y:g}\\{z:g}" for x, y in pts))
        c.NumberOfContourPoints = 4
    target = edited(tmp_path, "RTSTRUCT.dcm", widen)
    plan = compute_dvhs([target.parent], **SPEED)
    cord = plan.structure("SpinalCord")
    assert cord.status == "partial" and cord.coverage < 1e-5
    _assert_finite(plan)

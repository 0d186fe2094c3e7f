"""The synthetic DICOM-RT writer and the sample plan generator.

Everything here is checked with pydicom alone, never with dvheval's reader:
a geometry bug shared by the writer and the reader would otherwise go
unnoticed.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.tag import Tag

from dvheval.testing.synthetic import (
    ORIENTATIONS,
    GridSpec,
    ROISpec,
    axial_grid,
    circle_contour,
    derived_uid,
    ellipse_contour,
    new_uid,
    reorient_dose,
    write_rtdose,
    write_rtplan,
    write_rtstruct,
)

REPO = Path(__file__).resolve().parents[1]

# HFS box used for the geometry tests: voxel centres x -10..-2.5 (step 1.5),
# y -20..-12 (step 2), z -30..-21 (step 3).
BOX_ORIGIN = (-10.0, -20.0, -30.0)
BOX_SPACING = (3.0, 2.0, 1.5)  # dz, dy, dx
BOX_SHAPE = (4, 5, 6)  # nz, ny, nx

#: Worked out by hand for the box above, per patient position:
#: (origin, step per column, step per row, step per frame, rows, columns).
EXPECTED_GEOMETRY = {
    "HFS": ((-10, -20, -30), (1.5, 0, 0), (0, 2, 0), (0, 0, 3), 5, 6),
    "FFS": ((-2.5, -20, -21), (-1.5, 0, 0), (0, 2, 0), (0, 0, -3), 5, 6),
    "HFP": ((-2.5, -12, -30), (-1.5, 0, 0), (0, -2, 0), (0, 0, 3), 5, 6),
    "FFP": ((-10, -12, -21), (1.5, 0, 0), (0, -2, 0), (0, 0, -3), 5, 6),
    "HFDL": ((-10, -12, -30), (0, -2, 0), (1.5, 0, 0), (0, 0, 3), 6, 5),
    "HFDR": ((-2.5, -20, -30), (0, 2, 0), (-1.5, 0, 0), (0, 0, 3), 6, 5),
    "FFDL": ((-10, -20, -21), (0, 2, 0), (1.5, 0, 0), (0, 0, -3), 6, 5),
    "FFDR": ((-2.5, -12, -21), (0, -2, 0), (-1.5, 0, 0), (0, 0, -3), 6, 5),
}


def _uids() -> dict[str, str]:
    return {"frame_of_reference_uid": new_uid(), "study_uid": new_uid()}


def _positions_from_file(ds: pydicom.Dataset) -> np.ndarray:
    """Voxel centres (frames, rows, cols, 3) from the attributes of an RT Dose file."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    normal = np.cross(iop[:3], iop[3:])
    if offsets[0] == 0:
        frame = offsets[:, None] * normal
    else:  # absolute z values
        frame = (offsets - ipp[2])[:, None] * np.array([0.0, 0.0, 1.0])
    f, r, c = np.meshgrid(
        np.arange(int(ds.NumberOfFrames)),
        np.arange(int(ds.Rows)),
        np.arange(int(ds.Columns)),
        indexing="ij",
    )
    return (
        ipp + frame[f] + r[..., None] * row_spacing * iop[3:] + c[..., None] * col_spacing * iop[:3]
    )


def _box_dose() -> np.ndarray:
    return np.random.default_rng(7).uniform(0.0, 50.0, BOX_SHAPE)


def _box_value_at(dose_zyx: np.ndarray, points: np.ndarray) -> np.ndarray:
    x = (points[..., 0] - BOX_ORIGIN[0]) / BOX_SPACING[2]
    y = (points[..., 1] - BOX_ORIGIN[1]) / BOX_SPACING[1]
    z = (points[..., 2] - BOX_ORIGIN[2]) / BOX_SPACING[0]
    idx = [np.rint(v).astype(int) for v in (z, y, x)]
    for v, i in zip((z, y, x), idx, strict=True):
        assert np.allclose(v, i, atol=1e-6), "point is not a voxel centre of the box"
    return dose_zyx[idx[0], idx[1], idx[2]]


# ------------------------------------------------------------------- grids


def test_new_uid_is_unique_and_valid():
    uids = {new_uid() for _ in range(50)}
    assert len(uids) == 50
    for uid in uids:
        assert pydicom.uid.UID(uid).is_valid


def test_derived_uid_is_fixed_and_valid():
    uid = derived_uid("root", "dose")
    assert uid == derived_uid("root", "dose")
    assert uid != derived_uid("root", "plan")
    assert uid != derived_uid("rootdose")
    assert uid.startswith("2.25.") and pydicom.uid.UID(uid).is_valid


@pytest.mark.parametrize("orientation", sorted(EXPECTED_GEOMETRY))
@pytest.mark.parametrize("absolute", [False, True])
def test_axial_grid_voxel_positions(orientation, absolute):
    origin, col_step, row_step, frame_step, rows, cols = EXPECTED_GEOMETRY[orientation]
    grid = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, orientation, absolute_offsets=absolute)
    row_dir, col_dir = ORIENTATIONS[orientation]
    assert grid.row_direction == row_dir and grid.column_direction == col_dir
    assert grid.origin_mm == pytest.approx(origin)
    # PixelSpacing: between rows (along the column direction), then between columns
    assert grid.pixel_spacing_mm == pytest.approx((np.abs(row_step).max(), np.abs(col_step).max()))
    if absolute:
        z = origin[2] + frame_step[2] * np.arange(4)
        assert grid.frame_offsets_mm == pytest.approx(tuple(z))
    else:
        assert grid.frame_offsets_mm == pytest.approx((0.0, 3.0, 6.0, 9.0))

    pos = grid.voxel_positions((4, rows, cols))
    assert pos.shape == (4, rows, cols, 3)
    f, r, c = np.meshgrid(np.arange(4), np.arange(rows), np.arange(cols), indexing="ij")
    expected = (
        np.array(origin, float)
        + f[..., None] * np.array(frame_step, float)
        + r[..., None] * np.array(row_step, float)
        + c[..., None] * np.array(col_step, float)
    )
    np.testing.assert_allclose(pos, expected, atol=1e-9)
    # the same physical voxel centres as the HFS box
    hfs = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE).voxel_positions(BOX_SHAPE)
    np.testing.assert_allclose(
        np.sort(pos.reshape(-1, 3), axis=0), np.sort(hfs.reshape(-1, 3), axis=0), atol=1e-9
    )


def test_voxel_positions_hand_picked_points():
    hfdl = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, "HFDL").voxel_positions((4, 6, 5))
    assert hfdl[1, 2, 3] == pytest.approx((-7.0, -18.0, -27.0))
    ffs = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, "FFS").voxel_positions((4, 5, 6))
    assert ffs[0, 0, 0] == pytest.approx((-2.5, -20.0, -21.0))
    assert ffs[3, 4, 5] == pytest.approx((-10.0, -12.0, -30.0))


def test_gridspec_oblique_and_nonuniform_offsets():
    s = np.sqrt(0.5)
    grid = GridSpec(
        origin_mm=(1.0, 2.0, 3.0),
        row_direction=(s, s, 0.0),
        column_direction=(0.0, 0.0, -1.0),
        pixel_spacing_mm=(2.0, 4.0),
        frame_offsets_mm=(0.0, 1.0, 3.0),
    )
    pos = grid.voxel_positions((3, 2, 2))
    normal = np.array([-s, s, 0.0])  # (s, s, 0) x (0, 0, -1)
    expected = np.array([1.0, 2.0, 3.0]) + 3.0 * normal + 4.0 * np.array([s, s, 0]) + [0, 0, -2]
    assert pos[2, 1, 1] == pytest.approx(expected)


def test_gridspec_rejects_inconsistent_offsets():
    base = {
        "origin_mm": (0.0, 0.0, 5.0),
        "row_direction": (1.0, 0.0, 0.0),
        "column_direction": (0.0, 1.0, 0.0),
        "pixel_spacing_mm": (1.0, 1.0),
    }
    with pytest.raises(ValueError, match="start at 0"):
        GridSpec(frame_offsets_mm=(2.0, 4.0), **base).voxel_positions((2, 1, 1))
    with pytest.raises(ValueError, match="origin z"):
        GridSpec(frame_offsets_mm=(0.0, 2.0), absolute_offsets=True, **base).voxel_positions(
            (2, 1, 1)
        )
    with pytest.raises(ValueError, match="frames"):
        GridSpec(frame_offsets_mm=(0.0, 2.0), **base).voxel_positions((3, 1, 1))
    with pytest.raises(ValueError, match="orientation"):
        axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, "XYZ")


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_reorient_dose_keeps_dose_at_its_point(orientation):
    dose = _box_dose()
    grid = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, orientation)
    out = reorient_dose(dose, grid, BOX_ORIGIN, BOX_SPACING)
    _, _, _, _, rows, cols = EXPECTED_GEOMETRY[orientation]
    assert out.shape == (4, rows, cols)
    np.testing.assert_array_equal(out, _box_value_at(dose, grid.voxel_positions(out.shape)))
    np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(dose, axis=None))


def test_reorient_dose_rejects_grid_outside_the_box():
    grid = axial_grid((-20.0, -20.0, -30.0), BOX_SPACING, BOX_SHAPE)
    with pytest.raises(ValueError, match="outside"):
        reorient_dose(_box_dose(), grid, BOX_ORIGIN, BOX_SPACING)


# ------------------------------------------------------------------ RT Dose


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("absolute", [False, True])
def test_rtdose_round_trip_puts_dose_at_the_right_point(tmp_path, orientation, absolute):
    dose = _box_dose()
    grid = axial_grid(BOX_ORIGIN, BOX_SPACING, BOX_SHAPE, orientation, absolute)
    write_rtdose(
        tmp_path / "rd.dcm",
        reorient_dose(dose, grid, BOX_ORIGIN, BOX_SPACING),
        grid,
        **_uids(),
    )
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    stored = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    expected = _box_value_at(dose, _positions_from_file(ds))
    assert np.abs(stored - expected).max() <= 0.5 * float(ds.DoseGridScaling) * (1 + 1e-9)


@pytest.mark.parametrize("bits", [16, 32])
def test_rtdose_quantisation_and_attributes(tmp_path, bits):
    rng = np.random.default_rng(3)
    dose = rng.uniform(0.0, 63.3, (3, 4, 5))
    dose[0, 0, 0] = 0.0
    dose[-1, -1, -1] = 63.3
    grid = axial_grid((0.0, 0.0, 0.0), (2.5, 2.5, 2.5), (3, 4, 5))
    uids = _uids()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sop = write_rtdose(tmp_path / "rd.dcm", dose, grid, bits=bits, **uids)
        with pydicom.config.strict_reading():
            ds = pydicom.dcmread(tmp_path / "rd.dcm")
            for elem in ds.iterall():
                _ = elem.value
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID == sop == ds.SOPInstanceUID
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.Modality == "RTDOSE"
    assert ds.StudyInstanceUID == uids["study_uid"]
    assert ds.FrameOfReferenceUID == uids["frame_of_reference_uid"]
    assert ds.SeriesInstanceUID and ds.PatientID == "PHANTOM"
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (4, 5, 3)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (bits, bits, bits - 1)
    assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.FrameIncrementPointer == Tag(0x3004, 0x000C)
    assert ds["SliceThickness"].is_empty
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in ds.GridFrameOffsetVector] == [0.0, 2.5, 5.0]
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert "ReferencedRTPlanSequence" not in ds
    assert ds["PixelData"].VR == "OW"
    assert len(ds.PixelData) == 3 * 4 * 5 * bits // 8

    scaling = float(ds.DoseGridScaling)
    assert len(str(ds["DoseGridScaling"].value)) <= 16
    assert scaling == pytest.approx(63.3 / (2**bits - 1), rel=1e-6)
    counts = ds.pixel_array
    assert counts.max() == 2**bits - 1 and counts[0, 0, 0] == 0
    assert np.abs(counts * scaling - dose).max() <= 0.5 * scaling * (1 + 1e-9)


def test_rtdose_plan_references(tmp_path):
    grid = axial_grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (2, 2, 2))
    dose = np.ones((2, 2, 2))
    plan = new_uid()

    def read(**kw):
        write_rtdose(tmp_path / "rd.dcm", dose, grid, referenced_plan_uid=plan, **_uids(), **kw)
        return pydicom.dcmread(tmp_path / "rd.dcm")

    ref = read().ReferencedRTPlanSequence[0]
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5"
    assert ref.ReferencedSOPInstanceUID == plan
    assert "ReferencedFractionGroupSequence" not in ref

    ref = read(summation_type="FRACTION").ReferencedRTPlanSequence[0]
    group = ref.ReferencedFractionGroupSequence[0]
    assert group.ReferencedFractionGroupNumber == 1 and "ReferencedBeamSequence" not in group

    ds = read(summation_type="BEAM", referenced_fraction_group=2, referenced_beam_number=3)
    group = ds.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence[0]
    assert ds.DoseSummationType == "BEAM"
    assert group.ReferencedFractionGroupNumber == 2
    assert group.ReferencedBeamSequence[0].ReferencedBeamNumber == 3

    with pytest.raises(ValueError, match="beam"):
        read(summation_type="BEAM")


def test_rtdose_rejects_bad_input(tmp_path):
    grid = axial_grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (2, 2, 2))
    path = tmp_path / "rd.dcm"
    with pytest.raises(ValueError, match="negative"):
        write_rtdose(path, -np.ones((2, 2, 2)), grid, **_uids())
    with pytest.raises(ValueError, match="NaN"):
        write_rtdose(path, np.full((2, 2, 2), np.nan), grid, **_uids())
    with pytest.raises(ValueError, match="frames"):
        write_rtdose(path, np.ones((3, 2, 2)), grid, **_uids())
    with pytest.raises(ValueError, match="bits"):
        write_rtdose(path, np.ones((2, 2, 2)), grid, bits=8, **_uids())
    assert not path.exists()


def test_rtdose_all_zero_dose(tmp_path):
    grid = axial_grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (2, 2, 2))
    write_rtdose(tmp_path / "rd.dcm", np.zeros((2, 2, 2)), grid, bits=16, **_uids())
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    assert float(ds.DoseGridScaling) > 0 and not ds.pixel_array.any()


# ---------------------------------------------------------- RT Structure Set


def _rois() -> list[ROISpec]:
    outer = ellipse_contour((0.0, 0.0), (30.0, 20.0), 1.5, n=24)
    hole = circle_contour((5.0, 0.0), 7.123456789, 1.5, n=12)
    return [
        ROISpec(3, "PTV30", "PTV", (("CLOSED_PLANAR", outer), ("CLOSED_PLANAR", hole))),
        ROISpec(7, "Unknown", "", (("CLOSED_PLANAR", circle_contour((0, 0), 2.0, -3.0, 8)),)),
        ROISpec(10, "Iso", "MARKER", (("POINT", np.array([[0.5, -1.25, 2.0]])),)),
        ROISpec(11, "Duodenum", "ORGAN", (), color=(1, 2, 3)),
    ]


def test_rtstruct_contents(tmp_path):
    uids = _uids()
    rois = _rois()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sop = write_rtstruct(tmp_path / "rs.dcm", rois, label="TEST", **uids)
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == sop and ds.Modality == "RTSTRUCT"
    assert ds.StructureSetLabel == "TEST"
    assert ds.StudyInstanceUID == uids["study_uid"]
    assert (
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        == (uids["frame_of_reference_uid"])
    )
    assert "RTReferencedStudySequence" not in ds.ReferencedFrameOfReferenceSequence[0]

    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == [3, 7, 10, 11]
    assert [r.ROIName for r in ds.StructureSetROISequence] == [
        "PTV30",
        "Unknown",
        "Iso",
        "Duodenum",
    ]
    for item in ds.StructureSetROISequence:
        assert item.ReferencedFrameOfReferenceUID == uids["frame_of_reference_uid"]
        assert item.ROIGenerationAlgorithm in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")

    contours = {int(i.ReferencedROINumber): i for i in ds.ROIContourSequence}
    assert set(contours) == {3, 7, 10, 11}
    assert "ContourSequence" not in contours[11]
    assert list(contours[11].ROIDisplayColor) == [1, 2, 3]
    ptv = contours[3].ContourSequence
    assert [c.ContourGeometricType for c in ptv] == ["CLOSED_PLANAR", "CLOSED_PLANAR"]
    assert [int(c.NumberOfContourPoints) for c in ptv] == [24, 12]
    for written, (_, original) in zip(ptv, rois[0].contours, strict=True):
        data = np.array([float(v) for v in written.ContourData]).reshape(-1, 3)
        np.testing.assert_allclose(data, original, rtol=1e-12, atol=1e-12)
    point = contours[10].ContourSequence[0]
    assert point.ContourGeometricType == "POINT" and int(point.NumberOfContourPoints) == 1
    assert [float(v) for v in point.ContourData] == [0.5, -1.25, 2.0]
    for item in contours.values():
        assert len(item.ROIDisplayColor) == 3

    observations = {int(o.ReferencedROINumber): o for o in ds.RTROIObservationsSequence}
    assert observations[3].RTROIInterpretedType == "PTV"
    assert observations[10].RTROIInterpretedType == "MARKER"
    assert ds.RTROIObservationsSequence[1]["RTROIInterpretedType"].is_empty
    assert all(o["ROIInterpreter"].is_empty for o in observations.values())
    assert all(int(o.ObservationNumber) > 0 for o in observations.values())


def test_rtstruct_referenced_series_and_errors(tmp_path):
    series = new_uid()
    write_rtstruct(tmp_path / "rs.dcm", _rois(), referenced_series_uid=series, **_uids())
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == ds.StudyInstanceUID
    assert study.RTReferencedSeriesSequence[0].SeriesInstanceUID == series

    with pytest.raises(ValueError, match="unique"):
        write_rtstruct(tmp_path / "x.dcm", [ROISpec(1, "A", ""), ROISpec(1, "B", "")], **_uids())
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        bad = ROISpec(1, "A", "", (("CLOSED_PLANAR", np.zeros((4, 2))),))
        write_rtstruct(tmp_path / "x.dcm", [bad], **_uids())


def test_contour_shapes():
    pts = ellipse_contour((1.0, -2.0), (30.0, 10.0), 4.5, n=40)
    assert pts.shape == (40, 3)
    assert np.all(pts[:, 2] == 4.5)
    assert not np.allclose(pts[0], pts[-1])
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area > 0  # counter-clockwise in the patient x-y plane
    assert area == pytest.approx(0.5 * 40 * 30 * 10 * np.sin(2 * np.pi / 40))
    np.testing.assert_allclose(((x - 1) / 30) ** 2 + ((y + 2) / 10) ** 2, 1.0)
    circle = circle_contour((0.0, 0.0), 5.0, -1.0)
    assert circle.shape == (96, 3)
    np.testing.assert_allclose(np.hypot(circle[:, 0], circle[:, 1]), 5.0)


# ------------------------------------------------------------------ RT Plan


def test_rtplan_contents(tmp_path):
    uids = _uids()
    ss = new_uid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sop = write_rtplan(
            tmp_path / "rp.dcm",
            prescriptions=[("PTV40", 40.0), ("PTV30", 30.0)],
            fractions=10,
            structure_set_uid=ss,
            roi_numbers={"PTV40": 5},
            **uids,
        )
    ds = pydicom.dcmread(tmp_path / "rp.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5" and ds.SOPInstanceUID == sop
    assert ds.Modality == "RTPLAN" and ds.RTPlanGeometry == "PATIENT"
    assert ds.FrameOfReferenceUID == uids["frame_of_reference_uid"]
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == ss
    refs = ds.DoseReferenceSequence
    assert [int(r.DoseReferenceNumber) for r in refs] == [1, 2]
    assert [r.DoseReferenceDescription for r in refs] == ["PTV40", "PTV30"]
    assert [float(r.TargetPrescriptionDose) for r in refs] == [40.0, 30.0]
    assert {r.DoseReferenceStructureType for r in refs} == {"VOLUME"}
    assert {r.DoseReferenceType for r in refs} == {"TARGET"}
    assert refs[0].ReferencedROINumber == 5 and "ReferencedROINumber" not in refs[1]
    group = ds.FractionGroupSequence[0]
    assert int(group.NumberOfFractionsPlanned) == 10 and int(group.NumberOfBeams) == 0

    write_rtplan(tmp_path / "rp2.dcm", prescriptions=[("PTV", 20.0)], fractions=5, **uids)
    ds = pydicom.dcmread(tmp_path / "rp2.dcm")
    assert "ReferencedStructureSetSequence" not in ds
    assert ds.RTPlanGeometry == "TREATMENT_DEVICE"


def test_plan_files_share_patient_study_and_frame(tmp_path):
    uids = _uids()
    rs = write_rtstruct(tmp_path / "rs.dcm", _rois(), patient_id="P1", **uids)
    rp = write_rtplan(
        tmp_path / "rp.dcm",
        prescriptions=[("PTV30", 30.0)],
        fractions=10,
        structure_set_uid=rs,
        patient_id="P1",
        **uids,
    )
    grid = axial_grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (2, 2, 2))
    write_rtdose(
        tmp_path / "rd.dcm",
        np.ones((2, 2, 2)),
        grid,
        referenced_plan_uid=rp,
        patient_id="P1",
        **uids,
    )
    files = [pydicom.dcmread(tmp_path / f"{n}.dcm") for n in ("rs", "rp", "rd")]
    assert {f.PatientID for f in files} == {"P1"}
    assert {f.StudyInstanceUID for f in files} == {uids["study_uid"]}
    assert {f.FrameOfReferenceUID for f in files} == {uids["frame_of_reference_uid"]}
    assert len({f.SeriesInstanceUID for f in files}) == 3
    assert len({f.SOPInstanceUID for f in files}) == 3


# ------------------------------------------------------------- sample plan


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_sample_dicom", REPO / "tools" / "make_sample_dicom.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator():
    return _load_generator()


@pytest.fixture(scope="module")
def sample(generator, tmp_path_factory):
    return (generator.write_sample(tmp_path_factory.mktemp("sample_a")),)


def test_sample_generator_reproduces_the_shipped_plan(sample):
    """The generator is deterministic: it writes the shipped sample byte for byte."""
    shipped = REPO / "sample_dicom" / "sample_plan"
    for name in ("RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"):
        assert (sample[0] / name).read_bytes() == (shipped / name).read_bytes(), name


def test_sample_plan_is_consistent(sample):
    plan_dir = sample[0]
    rs, rp, rd = (pydicom.dcmread(plan_dir / f"{n}.dcm") for n in ("RTSTRUCT", "RTPLAN", "RTDOSE"))
    for ds in (rp, rd):
        assert ds.PatientID == rs.PatientID
        assert ds.StudyInstanceUID == rs.StudyInstanceUID
        assert ds.FrameOfReferenceUID == rs.FrameOfReferenceUID
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert rd.DoseSummationType == "PLAN" and rd.DoseUnits == "GY"
    assert [
        (r.DoseReferenceDescription, float(r.TargetPrescriptionDose))
        for r in rp.DoseReferenceSequence
    ] == [("PTV40", 40.0), ("PTV30", 30.0)]
    assert int(rp.FractionGroupSequence[0].NumberOfFractionsPlanned) == 10
    names = [r.ROIName for r in rs.StructureSetROISequence]
    assert names == [
        "BODY", "CTV30", "PTV30", "GTV40", "PTV40", "SpinalCord",
        "Kidney_L", "Kidney_R", "Liver", "Iso", "Duodenum",
    ]  # fmt: skip
    zs = {
        round(float(c.ContourData[2]), 3)
        for item in rs.ROIContourSequence
        for c in getattr(item, "ContourSequence", [])
        if c.ContourGeometricType == "CLOSED_PLANAR"
    }
    assert all(abs(z / 3.0 - round(z / 3.0)) < 1e-9 for z in zs)
    assert (plan_dir / "RTDOSE.dcm").stat().st_size < 4 * 2**20


def _check_metrics(generator, plan_dir: Path) -> None:
    m = generator.crude_check(plan_dir)
    assert generator.protocol_failures(m) == []
    assert 37.0 <= m["GTV40"]["D98"] <= 39.0
    assert 40.5 <= m["GTV40"]["D2"] <= 42.8
    assert 35.0 <= m["PTV40"]["D98"] <= 37.0
    assert 28.0 <= m["PTV30"]["D98"] and m["PTV30"]["D2"] <= 32.1
    assert 30.0 <= m["SpinalCord"]["Dmax"] < 34.0
    for kidney in ("Kidney_L", "Kidney_R"):
        assert 3.0 <= m[kidney]["Dmean"] <= 6.0
    # partial coverage: BODY and SpinalCord stick out of the dose grid
    assert m["BODY"]["in_grid_cc"] < 0.9 * m["BODY"]["volume_cc"]
    assert m["SpinalCord"]["in_grid_cc"] < 0.9 * m["SpinalCord"]["volume_cc"]
    assert m["Iso"] == {} and m["Duodenum"] == {}


def test_sample_plan_meets_protocol(generator, sample):
    _check_metrics(generator, sample[0])


def test_shipped_sample_plan_is_the_generated_one(generator):
    plan_dir = REPO / "sample_dicom" / "sample_plan"
    if not (plan_dir / "RTDOSE.dcm").exists():
        pytest.skip("sample_dicom/sample_plan has not been generated")
    rd = pydicom.dcmread(plan_dir / "RTDOSE.dcm", stop_before_pixels=True)
    assert rd.SOPInstanceUID == generator.sample_uid("dose")
    _check_metrics(generator, plan_dir)

"""Reading DICOM-RT inputs: orientations, dose sums, and every bad input's error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dvheval import compute_dvhs
from dvheval.errors import InputError
from dvheval.testing.synthetic import ROISpec, new_uid

from .phantoms import LinearDose, PhantomGrid, cylinder, sphere

ORIENTATIONS = ["HFS", "FFS", "HFP", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"]


def oblique_dose(x, y, z):
    """A dose varying along all three axes (so a wrong axis shows)."""
    return 40.0 + 0.3 * x - 0.2 * y + 0.3 * z + 0.002 * x * z


SHAPES = [sphere("Sphere", 12.0, 3.0, cx=5.0, cy=-4.0, cz=3.0),
          cylinder("Cyl", 4.0, -20.0, -5.0, 2.5, cx=-15.0, cy=10.0)]


def metrics_of(folder, **kw):
    plan = compute_dvhs([folder], **kw)
    return {s.name: s.metrics for s in plan.structures}, plan


@pytest.fixture(scope="module")
def hfs_metrics(tmp_path_factory):
    from .phantoms import write_phantom

    folder = write_phantom(tmp_path_factory.mktemp("hfs"), SHAPES, oblique_dose)
    return metrics_of(folder)[0]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("absolute", [False, True])
def test_every_orientation_gives_the_same_dvh(tmp_path, write, hfs_metrics, orientation,
                                              absolute):
    folder = write(tmp_path, SHAPES, oblique_dose, orientation=orientation,
                   absolute_offsets=absolute)
    got, plan = metrics_of(folder)
    for name, ref in hfs_metrics.items():
        for k, v in ref.items():
            assert got[name][k] == pytest.approx(v, abs=1e-6), (orientation, name, k)
    assert plan.dose.grid_shape == (33, 33, 33)


def test_beam_doses_sum_to_the_plan_dose(tmp_path, write):
    plan_folder = write(tmp_path / "a", SHAPES, oblique_dose)
    beams = write(tmp_path / "b", SHAPES, oblique_dose,
                  dose_files=(("BEAM", 0.2), ("BEAM", 0.3), ("BEAM", 0.5)))
    ref, _ = metrics_of(plan_folder)
    got, plan = metrics_of(beams)
    for name, m in ref.items():
        for k, v in m.items():
            assert got[name][k] == pytest.approx(v, abs=1e-5), (name, k)
    assert len(plan.dose.files) == 3
    assert plan.dose.summation == "sum of 3 BEAM doses"
    assert plan.dose.resampled_files == []


def test_beam_dose_on_another_grid_is_resampled(tmp_path, write):
    """A linear dose resampled trilinearly is exact, so the sum must match."""
    lin = LinearDose(25.0, 0.4, 0)
    shapes = [sphere("S", 10.0, 2.5)]
    a = write(tmp_path / "a", shapes, lin, dose_files=(("BEAM", 0.5),))
    b = write(tmp_path / "b", shapes, lin, dose_files=(("BEAM", 0.5),),
              grid=PhantomGrid(origin=(-46.0, -45.0, -44.0), spacing=(3.0, 2.0, 2.0),
                               shape=(31, 46, 47)))
    # put both beams into one folder with one structure set
    pa = pydicom.dcmread(a / "rd0.dcm")
    pb = pydicom.dcmread(b / "rd0.dcm")
    pb.FrameOfReferenceUID = pa.FrameOfReferenceUID
    pb.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = \
        pa.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    pb.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence[0] \
        .ReferencedBeamSequence[0].ReferencedBeamNumber = 2
    pb.save_as(a / "rd1.dcm")
    plan = compute_dvhs([a])
    s = plan.structures[0]
    assert plan.dose.resampled_files == [str(a / "rd1.dcm")]
    assert s.status == "ok"
    # full dose is 25 + 0.4 x; the sphere's mean is at its centre (x = 0)
    assert s.metrics["Dmean"] == pytest.approx(25.0, abs=0.01)
    assert s.metrics["Dmax"] == pytest.approx(25.0 + 0.4 * 10.0, abs=0.05)


BEAMS = (("BEAM", 0.2), ("BEAM", 0.3), ("BEAM", 0.5))


def test_beam_doses_of_every_planned_beam_are_summed(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 40.0)],
                   dose_files=BEAMS)
    plan = compute_dvhs([folder])
    assert plan.plan.treatment_beams == {"1": ("1", "2", "3")}
    assert plan.dose.summation == "sum of 3 BEAM doses"
    ref = compute_dvhs([write(tmp_path / "p", SHAPES, oblique_dose)])
    assert plan.structures[0].metrics["Dmean"] == pytest.approx(
        ref.structures[0].metrics["Dmean"], abs=1e-5)


def test_a_missing_beam_dose_is_refused(tmp_path, write):
    """Two of three beam doses would give 50 % of the dose: never summed silently."""
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 40.0)],
                   dose_files=BEAMS)
    (folder / "rd2.dcm").unlink()
    with pytest.raises(InputError, match=r"beam\(s\) 3 have no RTDOSE") as err:
        compute_dvhs([folder])
    assert "beams 1, 2, 3 in fraction group 1" in str(err.value)
    assert "beam(s) 1, 2;" in str(err.value)


def test_setup_and_zero_meterset_beams_need_no_dose(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 40.0)],
                   dose_files=BEAMS[:2])
    ds = pydicom.dcmread(folder / "rp.dcm")
    refs = ds.FractionGroupSequence[0].ReferencedBeamSequence
    for number, meterset in ((3, 0.0), (4, 12.0)):
        item = pydicom.Dataset()
        item.ReferencedBeamNumber = number
        item.BeamMeterset = meterset
        refs.append(item)
    setup = pydicom.Dataset()
    setup.BeamNumber = 4
    setup.TreatmentDeliveryType = "SETUP"
    ds.BeamSequence = [setup]
    ds.save_as(folder / "rp.dcm")
    plan = compute_dvhs([folder])
    assert plan.plan.treatment_beams == {"1": ("1", "2")}
    # now make beam 4 a treatment beam: its dose is missing
    ds.BeamSequence[0].TreatmentDeliveryType = "TREATMENT"
    ds.save_as(folder / "rp.dcm")
    with pytest.raises(InputError, match=r"beam\(s\) 4 have no RTDOSE"):
        compute_dvhs([folder])


def test_a_dose_of_another_rtplan_is_an_integrity_finding_that_closes(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 40.0)])
    ds = pydicom.dcmread(folder / "rd0.dcm")
    other = new_uid()
    ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = other
    ds.save_as(folder / "rd0.dcm")
    plan = compute_dvhs([folder])
    found = [f for f in plan.findings if f.check == "dose-plan-reference"]
    assert len(found) == 1 and found[0].closes
    assert other in found[0].message and found[0].file == str(folder / "rd0.dcm")


def test_a_single_session_dose_is_refused(tmp_path, write):
    """A one-fraction dose scored against course limits would pass far too easily."""
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 40.0)],
                   dose_files=(("FRACTION_SESSION", 0.1),))
    with pytest.raises(InputError, match="single session") as err:
        compute_dvhs([folder])
    assert err.value.attribute == "DoseSummationType"


def test_plan_and_beam_doses_are_not_summed(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose, dose_files=(("PLAN", 1.0), ("BEAM", 0.5)))
    with pytest.raises(InputError, match="count the dose twice"):
        compute_dvhs([folder])


def test_two_plan_doses_of_the_same_plan_are_refused(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose, prescriptions=[("PTV", 30.0)],
                   dose_files=(("PLAN", 1.0), ("PLAN", 1.0)))
    with pytest.raises(InputError, match="duplicates"):
        compute_dvhs([folder])


def test_two_structure_sets_are_ambiguous_and_listed(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    shutil.copy(folder / "rs.dcm", folder / "copy_of_structures.dcm")
    with pytest.raises(InputError) as exc:
        compute_dvhs([folder])
    assert "2 structure sets" in str(exc.value)
    assert "copy_of_structures.dcm" in str(exc.value) and "rs.dcm" in str(exc.value)


def test_files_are_classified_by_content_not_name(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    (folder / "rs.dcm").rename(folder / "dose_not_really.txt")
    (folder / "rd0.dcm").rename(folder / "STRUCTURES")
    plan = compute_dvhs([folder])
    assert plan.structure_set_file.endswith("dose_not_really.txt")
    assert plan.dose.files[0].endswith("STRUCTURES")


def test_frame_of_reference_mismatch_is_an_error(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    ds = pydicom.dcmread(folder / "rd0.dcm")
    ds.FrameOfReferenceUID = new_uid()
    ds.save_as(folder / "rd0.dcm")
    with pytest.raises(InputError, match="Frame of Reference"):
        compute_dvhs([folder])


def test_oblique_dose_grid_is_refused(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    ds = pydicom.dcmread(folder / "rd0.dcm")
    c, s = np.cos(0.3), np.sin(0.3)
    ds.ImageOrientationPatient = [c, s, 0, -s, c, 0]
    ds.save_as(folder / "rd0.dcm")
    with pytest.raises(InputError, match="oblique") as exc:
        compute_dvhs([folder])
    assert "rd0.dcm" in str(exc.value)


def test_relative_dose_needs_a_prescription(tmp_path, write):
    dose = LinearDose(1.0, 0.0, 0)  # relative dose 1.0 everywhere
    folder = write(tmp_path, SHAPES, dose, units="RELATIVE")
    with pytest.raises(InputError, match="RELATIVE") as exc:
        compute_dvhs([folder])
    assert "DoseUnits" in str(exc.value)
    plan = compute_dvhs([folder], prescription_gy=30.0)
    assert plan.structures[0].metrics["D50%"] == pytest.approx(30.0, abs=1e-4)


def test_missing_attribute_is_named(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    ds = pydicom.dcmread(folder / "rd0.dcm")
    del ds.DoseGridScaling
    ds.save_as(folder / "rd0.dcm")
    with pytest.raises(InputError, match="DoseGridScaling"):
        compute_dvhs([folder])


def test_non_dicom_file_given_directly_is_named(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    junk = tmp_path / "notes.txt"
    junk.write_text("not dicom")
    with pytest.raises(InputError, match="not a DICOM file") as exc:
        compute_dvhs([folder / "rs.dcm", folder / "rd0.dcm", junk])
    assert "notes.txt" in str(exc.value)


def test_non_dicom_file_inside_a_folder_is_reported_not_fatal(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    (folder / "notes.txt").write_text("not dicom")
    plan = compute_dvhs([folder])
    assert any("notes.txt" in w for w in plan.warnings)


def test_missing_dose_and_missing_path(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    (folder / "rd0.dcm").unlink()
    with pytest.raises(InputError, match="no RTDOSE"):
        compute_dvhs([folder])
    with pytest.raises(InputError, match="no such file"):
        compute_dvhs([tmp_path / "nowhere"])


def test_point_and_empty_rois_are_listed_not_dropped(tmp_path, write):
    extra = [
        ROISpec(10, "Iso", "MARKER", (("POINT", np.array([[0.0, 0.0, 0.0]])),)),
        ROISpec(11, "Planned", "ORGAN", ()),
    ]
    folder = write(tmp_path, SHAPES, oblique_dose, extra_rois=extra)
    plan = compute_dvhs([folder])
    by_name = {s.name: s for s in plan.structures}
    assert by_name["Iso"].status == "no_dvh"
    assert by_name["Planned"].status == "empty"
    assert by_name["Planned"].volume_cc is None
    assert all(v is None for v in by_name["Iso"].metrics.values())


def test_unknown_structure_name_lists_available(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose)
    with pytest.raises(InputError, match="Sphere, Cyl"):
        compute_dvhs([folder], structures=["Cord"])


def test_rtplan_prescription_is_read(tmp_path, write):
    folder = write(tmp_path, SHAPES, oblique_dose,
                   prescriptions=[("PTV40", 40.0), ("PTV30", 30.0)], fractions=10)
    plan = compute_dvhs([folder])
    assert plan.plan.fractions == 10
    assert [(p.name, p.dose_gy) for p in plan.plan.prescriptions] == [("PTV40", 40.0),
                                                                       ("PTV30", 30.0)]


@pytest.mark.parametrize(("values", "expected"), [
    # the first voxel of the highest finite dose; unknown (NaN) voxels skipped
    ([[[1, 5, 2], [5, np.nan, 0]], [[3, 3, 3], [4, 4, 4]]], (5.0, (1.0, 0.0, 0.0))),
    # an infinite value is not a dose: the largest finite one
    ([[[1, np.inf, 2], [5, np.nan, 0]], [[3, 3, 3], [4, 4, 4]]], (5.0, (0.0, 1.0, 0.0))),
    ([[[-np.inf, -2, -3], [-1, -1, -4]], [[-3, -3, -3], [-4, -4, -4]]], (-1.0, (0.0, 1.0, 0.0))),
    # no finite dose at all: 0 Gy and no position
    ([[[np.nan] * 3] * 2] * 2, (0.0, None)),
], ids=["first-of-equal", "infinite", "negative", "all-unknown"])
def test_dose_maximum_and_where_it_is(values, expected):
    from dvheval.dicom.dose_sum import _dose_maximum
    from dvheval.dicom.grid import CanonicalGrid

    grid = CanonicalGrid(x=np.array([0.0, 1.0, 2.0]), y=np.array([0.0, 1.0]),
                         z=np.array([0.0, 1.0]))
    assert _dose_maximum(np.array(values, dtype=np.float32), grid) == expected


# ------------------------------------------------ pixel data read in place
SAMPLE_DOSE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan" / "RTDOSE.dcm"


def _dose_in(tmp_path: Path, encoding: str) -> Path:
    """The sample dose written in ``encoding`` (big endian with its pixel bytes swapped)."""
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(SAMPLE_DOSE)
    path = tmp_path / f"{encoding}.dcm"
    if encoding == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True)
    elif encoding == "big":
        stored = ds.pixel_array
        ds.PixelData = stored.astype(stored.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, force_encoding=True, implicit_vr=False, little_endian=False)
    else:
        shutil.copy(SAMPLE_DOSE, path)
    return path


@pytest.mark.parametrize("encoding", ["explicit", "implicit", "big"])
def test_native_pixel_data_is_read_in_place_in_every_encoding(tmp_path, encoding):
    # the data set is read without its pixel data, which is a view into the
    # file's bytes; the dose is exactly pydicom's stored values times the scaling
    from dvheval.dicom.dose import _dataset_and_pixels, read_dose_file

    path = _dose_in(tmp_path, encoding)
    ds, pixels = _dataset_and_pixels(path.read_bytes(), path)
    assert pixels is not None and "PixelData" not in ds
    reference = pydicom.dcmread(SAMPLE_DOSE)
    expected = np.multiply(reference.pixel_array, float(reference.DoseGridScaling),
                           dtype=np.float32)
    dose = read_dose_file(path)
    assert np.array_equal(np.sort(dose.values, axis=None), np.sort(expected, axis=None))
    assert dose.values.shape == (61, 99, 139)
    assert np.array_equal(dose.values, read_dose_file(SAMPLE_DOSE).values)


def test_compressed_pixel_data_is_decoded_by_pydicom(tmp_path):
    from pydicom.uid import RLELossless

    from dvheval.dicom.dose import _dataset_and_pixels, read_dose_file

    ds = pydicom.dcmread(SAMPLE_DOSE)
    frames = ds.pixel_array[:4].copy()
    ds.NumberOfFrames = 4
    ds.GridFrameOffsetVector = list(ds.GridFrameOffsetVector)[:4]
    ds.PixelData = frames.tobytes()
    plain = tmp_path / "plain.dcm"
    ds.save_as(plain)
    ds.compress(RLELossless, frames)
    packed = tmp_path / "rle.dcm"
    ds.save_as(packed)
    got, pixels = _dataset_and_pixels(packed.read_bytes(), packed)
    assert pixels is None and "PixelData" in got  # encapsulated: pydicom reads it whole
    assert np.array_equal(read_dose_file(packed).values, read_dose_file(plain).values)


def test_empty_pixel_data_is_refused_by_name(tmp_path):
    from dvheval.dicom.dose import read_dose_file

    ds = pydicom.dcmread(SAMPLE_DOSE)
    ds.PixelData = b""
    path = tmp_path / "empty.dcm"
    ds.save_as(path)
    with pytest.raises(InputError) as info:
        read_dose_file(path)
    assert info.value.attribute == "PixelData"

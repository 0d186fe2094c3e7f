"""Contours are read straight from the structure set's bytes, exactly as pydicom reads them.

The reader takes the ROI Contour Sequence from the file's encoded elements
(the walk that also checks the file is complete) and parses ContourData with
numpy; anything unusual goes to the general pydicom path. Truth here is
pydicom's own reading of every ContourData value with ``float()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dvheval.dicom import structures
from dvheval.dicom.structures import read_structure_set
from dvheval.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan" / "RTSTRUCT.dcm"
BREAST = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "dicompyler-core" / \
    "rtss.dcm"


def _pydicom_contours(path: Path) -> dict[int, list[tuple[str, np.ndarray]]]:
    """ROI number -> (geometric type, points) of every contour, read by pydicom."""
    ds = pydicom.dcmread(path)
    out: dict[int, list[tuple[str, np.ndarray]]] = {}
    for item in ds.ROIContourSequence:
        lst = out.setdefault(int(item.ReferencedROINumber), [])
        for c in item.get("ContourSequence", []):
            points = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            lst.append((str(c.ContourGeometricType).strip(), points))
    return out


def _assert_same(path: Path) -> None:
    truth = _pydicom_contours(path)
    sset = read_structure_set(path)
    read = {roi.number: [(c.geometric_type, c.points) for c in roi.contours]
            for roi in sset.rois if roi.contours}
    assert read.keys() == {n for n, lst in truth.items() if lst}
    for number, contours in read.items():
        assert len(contours) == len(truth[number])
        for (gtype, points), (true_type, true_points) in zip(contours, truth[number],
                                                             strict=True):
            assert gtype == true_type
            assert np.array_equal(points, true_points)  # bit for bit


def _write(ds: pydicom.Dataset, path: Path, encoding: str) -> Path:
    if encoding == "implicit-undefined":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        encoding = "undefined"
    if encoding == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path)
    elif encoding == "big":
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, force_encoding=True, implicit_vr=False, little_endian=False)
    elif encoding == "undefined":
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                elem.value.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
        ds.save_as(path)
    else:
        ds.save_as(path)
    return path


@pytest.mark.parametrize("encoding", ["explicit", "implicit", "big", "undefined",
                                      "implicit-undefined"])
def test_contours_match_pydicom_in_every_encoding(tmp_path, encoding):
    path = _write(pydicom.dcmread(SAMPLE), tmp_path / "rs.dcm", encoding)
    _assert_same(path)


@pytest.mark.skipif(not BREAST.exists(), reason="shared test data not present")
def test_contours_of_a_clinical_structure_set_match_pydicom():
    # written by a planning system: exponents (5.4e-1), odd-length padding
    _assert_same(BREAST)


def _edited(tmp_path: Path, edit) -> Path:
    ds = pydicom.dcmread(SAMPLE)
    edit(ds)
    return _write(ds, tmp_path / "edited.dcm", "explicit")


def _first_contour(ds: pydicom.Dataset) -> pydicom.Dataset:
    return next(c for item in ds.ROIContourSequence for c in item.get("ContourSequence", []))


@pytest.mark.parametrize("text", ["1e1", "+2.5", "  3.25 ", "-0.0", "123.45678901234567891"])
def test_numbers_in_any_decimal_form_are_read_like_float(tmp_path, text):
    def edit(ds):
        c = _first_contour(ds)
        values = [str(v) for v in c.ContourData]
        values[0] = text
        c.ContourData = values
    path = _edited(tmp_path, edit)
    _assert_same(path)
    first = read_structure_set(path).rois[0].contours[0].points[0, 0]
    assert first == float(text)


@pytest.mark.parametrize(("edit", "attribute"), [
    (lambda c: setattr(c, "ContourData", ["1", "2", "nan"]), "ContourData"),
    (lambda c: setattr(c, "ContourData", ["1", "2"]), "ContourData"),
    (lambda c: setattr(c, "NumberOfContourPoints", 99), "NumberOfContourPoints"),
    (lambda c: setattr(c, "ContourGeometricType", "CIRCLE"), "ContourGeometricType"),
    (lambda c: setattr(c, "ContourData", ["1", "2", "1e9"]), "ContourData"),
    (lambda c: delattr(c, "ContourData"), "ContourData"),
    (lambda c: setattr(c, "ContourData", []), "ContourData"),
])
def test_bad_contour_values_are_refused_by_name(tmp_path, edit, attribute):
    path = _edited(tmp_path, lambda ds: edit(_first_contour(ds)))
    with pytest.raises(InputError) as info:
        read_structure_set(path)
    assert attribute in str(info.value)


def test_an_roi_contour_item_without_its_roi_number_is_refused(tmp_path):
    path = _edited(tmp_path, lambda ds: delattr(ds.ROIContourSequence[0],
                                                "ReferencedROINumber"))
    with pytest.raises(InputError, match="ReferencedROINumber"):
        read_structure_set(path)


def test_the_bytes_path_is_taken_for_plain_files(monkeypatch):
    # the general path is kept for unusual values only; a plain file must not need it
    def general(*args):
        raise AssertionError("the general path was used")
    monkeypatch.setattr(structures, "_all_contours", general)
    assert read_structure_set(SAMPLE).rois


@pytest.mark.parametrize(("edit", "attribute"), [
    (lambda c: setattr(c, "ContourData", ["1", "2"]), "ContourData"),
    (lambda c: setattr(c, "NumberOfContourPoints", 99), "NumberOfContourPoints"),
    (lambda c: setattr(c, "ContourGeometricType", "CIRCLE"), "ContourGeometricType"),
    (lambda c: setattr(c, "ContourData", ["1", "2", "123456"]), "ContourData"),
])
def test_plainly_written_defects_are_named_by_the_bytes_path(tmp_path, monkeypatch, edit,
                                                             attribute):
    # one set of checks serves both paths: a defect written in plain values is
    # refused, naming the ROI, without reading the file again through pydicom
    path = _edited(tmp_path, lambda ds: edit(_first_contour(ds)))

    def general(*args):
        raise AssertionError("the general path was used")
    monkeypatch.setattr(structures, "_all_contours", general)
    with pytest.raises(InputError) as info:
        read_structure_set(path)
    assert attribute in str(info.value) and "ROI 1 'BODY'" in str(info.value)

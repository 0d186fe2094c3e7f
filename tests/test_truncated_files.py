"""A DICOM file cut short is refused, whatever its encoding and wherever it is cut.

pydicom reads a truncated file without complaint (a structure set that lost
its last contours reads as a smaller, valid-looking one), so the reader walks
the encoded elements itself; see dvheval.dicom.completeness.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from typer.testing import CliRunner

from dvheval.cli import app
from dvheval.dicom.completeness import check_complete
from dvheval.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


def _encodings(tmp_path: Path, name: str) -> list[Path]:
    """The sample file as written, in implicit VR, with undefined-length sequences,
    and in explicit VR big endian."""
    out = [SAMPLE / name]
    ds = pydicom.dcmread(SAMPLE / name)
    implicit = tmp_path / f"implicit-{name}"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit)
    out.append(implicit)
    undefined = pydicom.dcmread(SAMPLE / name)
    for elem in undefined.iterall():
        if elem.VR == "SQ":
            elem.value.is_undefined_length = True
    for item in (i for e in undefined.iterall() if e.VR == "SQ" for i in e.value):
        item.is_undefined_length_sequence_item = True
    path = tmp_path / f"undefined-{name}"
    undefined.save_as(path)
    out.append(path)
    if name != "RTDOSE.dcm":  # big endian pixel data needs byte swapping; headers suffice
        big = tmp_path / f"big-{name}"
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(big, ds, force_encoding=True, implicit_vr=False, little_endian=False)
        out.append(big)
    return out


@pytest.mark.parametrize("name", ["RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"])
def test_complete_files_pass_in_every_encoding(tmp_path, name):
    for path in _encodings(tmp_path, name):
        check_complete(path)
        assert len(pydicom.dcmread(path)) > 10


def test_implicit_pixel_data_that_starts_like_an_item_is_complete(tmp_path):
    """Native pixel data whose first stored values are 0xFFFE, 0xE000 reads, in implicit VR,
    like an Item tag; the dictionary says PixelData is no sequence, so the file is whole
    and its dose is the dose written."""
    import numpy as np

    ds = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    pixels = ds.pixel_array.copy()
    pixels[0, 0, :2] = (0xFFFE, 0xE000)
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "RTDOSE.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    check_complete(path)
    from dvheval.dicom.dose import read_dose_file

    values = read_dose_file(path).values
    scaling = float(ds.DoseGridScaling)
    for stored in (0xFFFE, 0xE000):
        assert np.isclose(values, stored * scaling, rtol=1e-6, atol=0).any()


def _top_level_ends(path: Path) -> set[int]:
    """Byte offsets where a top-level element ends (read by pydicom, independently).

    A file cut exactly there is a complete, shorter data set: no encoding can
    tell; the attributes it lost are then missing, which the readers refuse
    where the plan needs them.
    """
    from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble

    ends = set()
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        syntax = meta.TransferSyntaxUID
        for raw in data_element_generator(fp, syntax.is_implicit_VR, syntax.is_little_endian,
                                          defer_size=0):
            if raw.length != 0xFFFFFFFF:
                ends.add(raw.value_tell + raw.length)
    return ends


@pytest.mark.parametrize("name", ["RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"])
def test_every_cut_is_refused(tmp_path, name):
    for path in _encodings(tmp_path, name):
        data = path.read_bytes()
        size = len(data)
        boundaries = _top_level_ends(path)
        cuts = sorted({1, 2, 3, 5, 8, 13, 100, 1000, size // 3, size // 2, size - 200} - {0})
        for cut in (c for c in cuts if 0 < c < size - 140 and size - c not in boundaries):
            short = tmp_path / "short.dcm"
            short.write_bytes(data[:-cut])
            with pytest.raises(InputError, match="incomplete or damaged file") as err:
                check_complete(short)
            assert "short.dcm" in str(err.value), (path.name, cut)


def test_trailing_garbage_is_refused(tmp_path):
    path = tmp_path / "RTPLAN.dcm"
    path.write_bytes((SAMPLE / "RTPLAN.dcm").read_bytes() + b"\x00\x01\x02")
    with pytest.raises(InputError, match="incomplete or damaged"):
        check_complete(path)


def test_a_structure_set_cut_by_one_byte_closes_the_gate(tmp_path):
    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    rs = plan / "RTSTRUCT.dcm"
    rs.write_bytes(rs.read_bytes()[:-1])
    res = CliRunner().invoke(app, ["check", str(plan), "-p", "bone-sib-30-40-10fx"])
    assert res.exit_code == 2
    assert "RTSTRUCT.dcm" in res.output and "incomplete or damaged file" in res.output


@pytest.mark.parametrize("keep", [135, 141, 160])
def test_a_file_cut_inside_its_header_is_a_plain_error(tmp_path, keep):
    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    rd = plan / "RTDOSE.dcm"
    rd.write_bytes(rd.read_bytes()[:keep])
    res = CliRunner().invoke(app, ["check", str(plan), "-p", "bone-sib-30-40-10fx"])
    assert res.exit_code == 2
    assert "RTDOSE.dcm" in res.output
    assert "Exception" not in res.output and "Traceback" not in res.output

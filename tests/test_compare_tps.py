"""``dvheval compare-tps``: dvheval against DVHs a planning system stored in the RTDOSE.

The stored DVHs of the phantom are written here from the closed-form truth
of :mod:`tests.phantoms` (a cumulative DVH in 0.01 Gy bins), never from
dvheval's own output; wrong ones are made by scaling that truth.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from dvheval.cli import app
from dvheval.engine.dvh import DOSE_TOLERANCE, DVH
from dvheval.engine.tps_compare import cumulative_at, max_curve_difference

from .conftest import DCC_DATA
from .phantoms import LinearDose, cylinder, sphere, volume_at_least, write_phantom

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

DOSE = LinearDose(30.0, 0.6, 0)  # 0.6 Gy/mm along x: 24..36 Gy on Cyl, 16..20 on Small
CYL = cylinder("Cyl", 10.0, -15.0, 15.0, 3.0)  # 11 planes, 33 mm thick with end caps
SMALL = sphere("Small", 3.0, 1.0, cx=-20.0, cy=-20.0)  # 0.11 cc
SHAPES = {1: CYL, 2: SMALL}


def run(*args: object):
    return runner.invoke(app, ["compare-tps", *(str(a) for a in args)])


@functools.cache
def truth_dvh(number: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin widths (Gy) and cumulative volumes (cm^3) at the lower bin edges, from the truth.

    One bin from 0 to 15 Gy (below every dose of the phantom), then 0.01 Gy
    bins to 40 Gy, so that DVHData stays within a DICOM value's 64 kB.
    """
    shape = SHAPES[number]
    lower = np.concatenate([[0.0], np.arange(2500) * 0.01 + 15.0])
    widths = np.diff(np.concatenate([lower, [40.0]]))
    vols = np.array([volume_at_least(shape, DOSE, d) for d in lower]) / 1000.0
    return widths, vols


def truth_item(number: int, *, dose_scaling: float = 1.0, volume_factor: float = 1.0,
               volume_units: str = "CM3") -> pydicom.Dataset:
    """A cumulative DVH item holding the closed-form DVH of ROI ``number``."""
    widths, vols = truth_dvh(number)
    data = np.column_stack([widths, vols * volume_factor]).ravel()
    ref = pydicom.Dataset()
    ref.ReferencedROINumber = number
    ref.DVHROIContributionType = "INCLUDED"
    item = pydicom.Dataset()
    item.DVHReferencedROISequence = [ref]
    item.DVHType = "CUMULATIVE"
    item.DoseUnits = "GY"
    item.DoseType = "PHYSICAL"
    item.DVHVolumeUnits = volume_units
    item.DVHDoseScaling = dose_scaling
    item.DVHNumberOfBins = widths.size
    item.DVHData = [f"{x:.10g}" for x in data]
    return item


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """The phantom without a DVH Sequence."""
    return write_phantom(tmp_path_factory.mktemp("tps") / "plan", [CYL, SMALL], DOSE)


@pytest.fixture(scope="module")
def items() -> dict[int, pydicom.Dataset]:
    return {n: truth_item(n) for n in SHAPES}


def with_items(phantom: Path, tmp_path: Path, *dvh_items: pydicom.Dataset) -> Path:
    """A copy of the phantom whose RTDOSE holds these DVH items."""
    folder = tmp_path / "plan"
    shutil.copytree(phantom, folder)
    ds = pydicom.dcmread(folder / "rd0.dcm")
    ds.DVHSequence = list(dvh_items)
    ds.save_as(folder / "rd0.dcm")
    return folder


def as_json(result) -> dict:
    return json.loads(result.stdout)


def quantity(doc: dict, roi: str, name: str) -> dict:
    entry = next(r for r in doc["rois"] if r["name"] == roi)
    return next(q for q in entry["quantities"] if q["name"] == name)


# ------------------------------------------------------------------ agreement
def test_phantom_agrees_with_its_closed_form_dvh(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, items[1], items[2])
    result = run(folder, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = as_json(result)
    assert doc["verdict"] == "AGREE"
    assert [r["verdict"] for r in doc["rois"]] == ["AGREE", "AGREE"]
    vol = quantity(doc, "Cyl", "volume")
    # the stored volume is the slab stack's, 11 planes x 3 mm of a 360-gon
    assert vol["tps"] == pytest.approx(CYL.volume_mm3() / 1000, rel=1e-6)
    assert abs(vol["difference"]) < 1.0
    # the cylinder is centred on x = 0, where the dose is 30 Gy: D50% = Dmean = 30 Gy
    for name in ("D50%", "Dmean"):
        q = quantity(doc, "Cyl", name)
        assert q["tps"] == pytest.approx(30.0, abs=0.01)
        assert q["dvheval"] == pytest.approx(30.0, abs=0.05)
    # the small sphere's volume is reported, not judged
    small = quantity(doc, "Small", "volume")
    assert small["agrees"] is None and small["tolerance"] is None


def test_text_report_lists_every_roi_and_the_outcome(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, items[1], items[2])
    result = run(folder)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("Cyl ") and line.rstrip().endswith("AGREE") for line in lines)
    assert any(line.startswith("Small ") and "not judged" in line for line in lines)
    assert lines[-1] == "AGREE: all 2 stored DVHs agree within the tolerances (exit 0)"


# --------------------------------------------------------------- disagreement
def test_scaled_dose_disagrees_and_names_roi_and_doses(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, truth_item(1, dose_scaling=1.05), items[2])
    result = run(folder, "--format", "json")
    assert result.exit_code == 1
    doc = as_json(result)
    cyl = next(r for r in doc["rois"] if r["name"] == "Cyl")
    assert cyl["verdict"] == "DISAGREE"
    bad = {q["name"] for q in cyl["quantities"] if q["agrees"] is False}
    assert {"Dmean", "D98%", "D50%", "D2%"} <= bad and "volume" not in bad
    # 5 % of 30 Gy
    assert quantity(doc, "Cyl", "D50%")["difference"] == pytest.approx(-1.5, abs=0.05)
    assert "Cyl: " in doc["message"] and "D50%" in doc["message"]
    assert "Small" not in doc["message"]
    # a dose tolerance of 2 Gy accepts the 1.5 Gy shift
    assert run(folder, "--dose-tol", "2").exit_code == 0


def test_wrong_volume_disagrees_on_volume_only(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, truth_item(1, volume_factor=1.1), items[2])
    result = run(folder)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == ("DISAGREE: 1 of 2 disagree (Cyl: volume) "
                                              "(exit 1)")
    doc = as_json(run(folder, "--format", "json"))
    assert quantity(doc, "Cyl", "volume")["difference"] == pytest.approx(100 * (1 / 1.1 - 1),
                                                                         abs=1.0)


def test_small_roi_volume_is_judged_only_above_small_cc(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, items[1], truth_item(2, volume_factor=1.5))
    assert run(folder).exit_code == 0
    result = run(folder, "--small-cc", "0", "--format", "json")
    assert result.exit_code == 1
    assert "Small: volume" in as_json(result)["message"]


def test_without_end_caps_the_cylinder_is_one_slice_thinner(phantom, items, tmp_path):
    # the stored truth has half-slice end caps: 33 mm; without caps dvheval gives 30 mm
    folder = with_items(phantom, tmp_path, items[1], items[2])
    result = run(folder, "--no-end-caps", "--format", "json")
    assert result.exit_code == 1
    doc = as_json(result)
    assert doc["end_caps"] is False
    assert quantity(doc, "Cyl", "volume")["difference"] == pytest.approx(-100 / 11, abs=0.3)


# ------------------------------------------------------------- fail closed
def test_no_dvh_sequence_never_passes(phantom):
    result = run(phantom)
    assert result.exit_code == 1
    assert "has no DVH Sequence: nothing to compare" in result.stdout
    result = run(phantom, "--format", "json")
    assert result.exit_code == 1
    assert "has no DVH Sequence" in result.stderr
    assert as_json(result)["verdict"] == "NOT_COMPARED"


@pytest.mark.parametrize(("second", "reason"), [
    (lambda: truth_item(2, volume_units="PERCENT"), "volume units PERCENT"),
    (lambda: truth_item(2, volume_factor=1.0), "ROI 2 has 2 DVH items"),
])
def test_stored_dvh_that_cannot_be_compared_closes(phantom, items, tmp_path, second, reason):
    extra = [items[2]] if "2 DVH items" in reason else []
    folder = with_items(phantom, tmp_path, items[1], *extra, second())
    result = run(folder, "--format", "json")
    assert result.exit_code == 1
    doc = as_json(result)
    assert doc["verdict"] == "DISAGREE"
    small = next(r for r in doc["rois"] if r["name"] == "Small")
    assert small["verdict"] == "NOT_COMPARED"
    assert reason in small["notes"][0]
    assert "1 of 2 could not be compared (Small)" in doc["message"]


def test_unusable_input_exits_2(phantom, items, tmp_path):
    assert run(tmp_path / "missing").exit_code == 2
    folder = with_items(phantom, tmp_path, items[1])
    ds = pydicom.dcmread(folder / "rd0.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "rd1.dcm")
    result = run(folder)
    assert result.exit_code == 2
    assert "compares one RTDOSE" in result.stderr


# ------------------------------------------------------------------- formats
def test_csv_and_markdown_hold_the_same_values(phantom, items, tmp_path):
    folder = with_items(phantom, tmp_path, truth_item(1, dose_scaling=1.05), items[2])
    rows = list(csv.DictReader(io.StringIO(run(folder, "--format", "csv").stdout)))
    d50 = next(r for r in rows if r["roi"] == "Cyl" and r["quantity"] == "D50%")
    assert float(d50["tps"]) == pytest.approx(31.5, abs=0.02)
    assert d50["agrees"] == "false" and d50["verdict"] == "DISAGREE"
    md = run(folder, "--format", "markdown")
    assert md.exit_code == 1
    assert "| ROI | Volume cc TPS / dvheval |" in md.stdout
    assert re.search(r"^\| Cyl \|.*DISAGREE", md.stdout, re.M)


@pytest.mark.filterwarnings("ignore:Found unknown escape sequence")
def test_names_from_the_file_are_made_safe(tmp_path, items):
    hostile = cylinder("=Cyl\x1b[2J", 10.0, -15.0, 15.0, 3.0)
    folder = write_phantom(tmp_path / "plan", [hostile, SMALL], DOSE)
    folder = with_items(folder, tmp_path / "copy", truth_item(1, dose_scaling=1.05), items[2])
    text = run(folder).stdout
    assert "\x1b" not in text and "=Cyl\\x1b[2J" in text
    rows = list(csv.DictReader(io.StringIO(run(folder, "--format", "csv").stdout)))
    assert rows[0]["roi"] == "'=Cyl\\x1b[2J"
    assert as_json(run(folder, "--format", "json"))["rois"][0]["name"] == "=Cyl\x1b[2J"


# ---------------------------------------------------------------- the curve
def uniform(dose: float, cc: float = 1.0) -> DVH:
    return DVH(np.array([dose, dose]), np.array([cc]), cc, dose, dose, dose)


def test_vectorised_cumulative_matches_the_dvh_look_up():
    rng = np.random.default_rng(7)
    dvh = DVH.from_samples(rng.uniform(10, 20, 500), rng.uniform(0.1, 1.0, 500), 300.0)
    doses = np.linspace(9.0, 21.0, 97)
    # volume_at_dose looks DOSE_TOLERANCE below the dose asked for; undo that shift
    expected = [dvh.volume_at_dose(d * (1 + DOSE_TOLERANCE)) for d in doses]
    assert cumulative_at(dvh, doses) == pytest.approx(expected, abs=1e-6)


def test_curve_difference_of_two_uniform_doses():
    a, b = uniform(10.0), uniform(10.2, 3.0)
    # every dose in (10, 10.2] gets all of b and none of a; volumes are relative
    assert cumulative_at(b, np.array([10.1, 10.2, 10.3])).tolist() == [3.0, 3.0, 0.0]
    diff, at, beyond = max_curve_difference(a, b, shift_gy=0.5)
    assert diff == pytest.approx(100.0) and 10.0 < at <= 10.2
    assert beyond == 0.0
    assert max_curve_difference(a, b, shift_gy=0.1)[2] == pytest.approx(100.0)


# ---------------------------------------------------------- the real plan
def readme_table() -> dict[str, list[tuple[float, float]]]:
    """README's agreement table: per ROI, (TPS, dvheval) of volume, Dmean, D98%, D50%, D2%."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**A real plan.**"):text.index("## Speed")]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.match(r"[\d.]+ / [\d.]+", cells[1]):
            out[cells[0]] = [tuple(float(x) for x in re.findall(r"[\d.]+", c)[:2])
                             for c in cells[1:]]
    return out


@pytest.mark.skipif(not (DCC_DATA / "rtdose.dcm").exists(),
                    reason=f"reference plan not found at {DCC_DATA}")
def test_breast_plan_reproduces_readme_table():
    table = readme_table()
    assert len(table) == 9
    result = run(DCC_DATA, "--no-end-caps", "--format", "json")
    doc = as_json(result)
    for name, values in table.items():
        names = ("volume", "Dmean", "D98%", "D50%", "D2%")
        for qname, (tps, mine) in zip(names, values, strict=True):
            q = quantity(doc, name, qname)
            assert round(q["tps"], 3) == pytest.approx(tps, abs=1e-9), (name, qname)
            # dvheval's side to the table's last digit, plus one in it for sampling changes
            slack = 0.002 * mine if qname == "volume" else 0.002
            assert abs(q["dvheval"] - mine) <= 0.0005 + slack, (name, qname, q["dvheval"])
    # BODY alone disagrees: the planning system's BODY is cut to its calculation volume
    assert result.exit_code == 1
    assert doc["message"] == "DISAGREE: 1 of 9 disagree (BODY: volume) (exit 1)"
    assert doc["without_tps_dvh"] == ["Areola"]

"""The PDF report: pages, text, reproducible bytes and the ``--format pdf`` command line.

The text is read back with poppler's ``pdftotext`` when it is installed;
without it those assertions are skipped.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dvheval.check import check_plan
from dvheval.cli import app
from dvheval.reports import BINARY_FORMATS, FORMATS, gate_text, render, report_view
from dvheval.reports.pdf import text_width, to_pdf, wrap
from tests.test_check_report import CORD, SOURCE, make_plan, protocol, roi

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PDFTOTEXT = "/usr/bin/pdftotext"
needs_pdftotext = pytest.mark.skipif(not Path(PDFTOTEXT).exists(),
                                     reason="poppler's pdftotext is not installed "
                                            "(Debian: apt-get install poppler-utils)")

#: Five constraints on each of twelve structures: 60 rows.
METRICS = ("Dmax <= {k} Gy", "Mean <= {k} Gy", "D1cc <= {k} Gy", "V20Gy <= 50 cc",
           "D50% <= {k} Gy")
N_ORGANS = 12


def many_constraints() -> str:
    """A protocol of 60 constraints, each structure with five different metrics."""
    text = SOURCE.format(name="many") + "structures:\n"
    for i in range(1, N_ORGANS + 1):
        text += f"  - name: Organ{i:02d}\n    constraints:\n"
        for j, metric in enumerate(METRICS):
            check = metric.format(k=20 + i)
            text += (f'      - {{id: c{i}-{j}, check: "{check}", source: ref, '
                     f"priority: {'hard' if j % 2 else 'objective'}}}\n")
    return text


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """The check of a plan against the 60-constraint protocol (some limits fail)."""
    proto = protocol(tmp_path_factory.mktemp("many"), many_constraints())
    rois = [roi(f"Organ{i:02d}", [float(i + 15 + k % 9) for k in range(30)], number=i)
            for i in range(1, N_ORGANS + 1)]
    return check_plan(make_plan(*rois), proto)


@pytest.fixture(scope="module")
def many_pdf(many):
    """The PDF report of ``many`` (rendered once for the tests that read it)."""
    return to_pdf(many, date="2026-12-02")


def page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))


def pdf_text(pdf: bytes, tmp_path: Path, layout: bool = True) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    args = [PDFTOTEXT, *(["-layout"] if layout else []), str(path), "-"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def test_pdf_is_a_format_written_as_bytes():
    assert "pdf" in FORMATS and BINARY_FORMATS == ("pdf",)


def test_many_constraints_continue_on_more_pages(many, many_pdf, tmp_path):
    pdf = many_pdf
    assert pdf.startswith(b"%PDF")
    assert len([c for c in many.to_dict()["constraints"] if c["verdict"] != "REPORT"]) == 60
    # at least two pages of the table, then the DVH plot; a short check has one of each
    assert page_count(pdf) >= 3
    assert page_count(to_pdf(check_plan(make_plan(roi("Myelon", [30.0] * 10)),
                                        protocol(tmp_path, CORD)))) == 2


@needs_pdftotext
def test_text_holds_the_verdict_every_row_and_the_patient(many, many_pdf, tmp_path):
    pdf = many_pdf
    text = pdf_text(pdf, tmp_path)
    sentence = gate_text(report_view(many))
    assert " ".join(sentence.split()) in " ".join(pdf_text(pdf, tmp_path, False).split())
    assert "PAT1" in text and "2026-12-02" in text and f"exit code {many.exit_code}" in text
    lines = text.splitlines()
    for c in many.to_dict()["constraints"]:
        row = re.compile(rf"\b{re.escape(c['structure'])}\b.*\s{re.escape(c['metric'])}\s")
        assert any(row.search(line + " ") for line in lines), (c["structure"], c["metric"])
    n = page_count(pdf)
    assert text.count(f"of {n}") == n  # every page numbered "page i of n"


def test_two_renders_are_byte_identical(many, many_pdf, tmp_path, monkeypatch):
    assert to_pdf(many, date="2026-12-02") == many_pdf
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764633600")  # 2025-12-02
    short = check_plan(make_plan(roi("Myelon", [30.0] * 10)), protocol(tmp_path, CORD))
    first = render(short, "pdf")
    assert isinstance(first, bytes) and first == render(short, "pdf")
    assert b"CreationDate" not in first


@needs_pdftotext
def test_plan_text_is_shown_with_visible_escapes(tmp_path):
    plan = make_plan(roi("Myelon", [30.0] * 10))
    hostile = dataclasses.replace(plan, patient_id="PAT\x1b[2J1", patient_name="Evil\nName")
    text = pdf_text(to_pdf(check_plan(hostile, protocol(tmp_path, CORD))), tmp_path)
    assert "PAT\\x1b[2J1" in text and "Evil\\nName" in text and "\x1b" not in text


@pytest.mark.parametrize("text", ["NOT_APPLICABLE", "Lumbosacral_Plexus_Left_PRV_5mm",
                                  "a very long note " * 12, "x" * 200, ""])
def test_wrapped_lines_never_exceed_the_column(text):
    lines = wrap(text, 50.0, 7.0, bold=True)
    assert all(text_width(line, 7.0, True) <= 50.0 for line in lines if len(line) > 1)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


runner = CliRunner()


def test_cli_pdf_needs_an_output_file():
    res = runner.invoke(app, ["check", str(SAMPLE), "-p", "bone-sib-30-40-10fx",
                              "--format", "pdf"])
    assert res.exit_code == 2
    assert "--format pdf" in res.output and "-o" in res.output
    res = runner.invoke(app, ["check", str(SAMPLE), "-p", "bone-sib-30-40-10fx",
                              "--format", "pdf", "-o", "x.pdf", "--integrity-only"])
    assert res.exit_code == 2 and "--integrity-only" in res.output


def test_cli_pdf_is_written_with_the_gate_exit_code(tmp_path):
    out = tmp_path / "report.pdf"
    res = runner.invoke(app, ["check", str(SAMPLE), "-p", "bone-sib-30-40-10fx",
                              "--format", "pdf", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(b"%PDF") and page_count(out.read_bytes()) == 2

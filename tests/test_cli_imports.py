"""The command line imports only what a command needs.

``dvheval --help``, ``dvheval dvh`` and ``dvheval check --format json`` must
not load matplotlib, pandas, dask or pyarrow: each run starts a fresh
interpreter, invokes the command through typer's CliRunner and lists the
heavy top-level packages then loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
HEAVY = ("matplotlib", "pandas", "dask", "pyarrow")

PROBE = """
import json, sys
from typer.testing import CliRunner
from dvheval.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = sorted({{name.partition(".")[0] for name in sys.modules}} & set({heavy!r}))
print(json.dumps({{"exit_code": result.exit_code, "heavy": heavy}}))
"""


def loaded_heavy_modules(*args: str) -> tuple[int, list[str]]:
    """Run ``dvheval ARGS`` in a new interpreter; its exit code and heavy modules."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(list(args))],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=True)
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["exit_code"], doc["heavy"]


@pytest.mark.parametrize("args", [
    ("--help",),
    ("dvh", str(SAMPLE), "-s", "SpinalCord"),
    ("dvh", str(SAMPLE), "-s", "SpinalCord", "--format", "json"),
    ("check", str(SAMPLE), "-p", "bone-sib-30-40-10fx", "--format", "json"),
], ids=["help", "dvh-table", "dvh-json", "check-json"])
def test_command_does_not_import_heavy_packages(args: tuple[str, ...]) -> None:
    code, heavy = loaded_heavy_modules(*args)
    assert code == 0
    assert heavy == []

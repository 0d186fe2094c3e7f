"""Harness of the property-based fuzz suite: CLI runs with a time limit, the
output properties every run must have, and DICOM edits that write any bytes.

The suite edits copies of the shipped sample plan with pydicom. Hostile
values (``nan``, ``1e400``, wrong multiplicity) cannot go through pydicom's
value conversion, so :func:`set_raw` stores them as raw element bytes, which
pydicom writes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from hypothesis import HealthCheck, Phase, settings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PROTOCOLS = ROOT / "protocols"
PROTOCOL = "bone-sib-30-40-10fx"
FILES = ("RTDOSE.dcm", "RTSTRUCT.dcm", "RTPLAN.dcm")

#: ROIs of the sample plan that the bone-sib protocol evaluates.
USED_ROIS = ("SpinalCord", "PTV30", "PTV40", "GTV40", "CTV30", "Kidney_L", "Kidney_R")
#: ROIs carrying a limit whose structure is required (cord and both PTVs).
GATED_ROIS = ("SpinalCord", "PTV30", "PTV40")
#: ROIs the protocol does not use.
UNUSED_ROIS = ("BODY", "Liver", "Iso", "Duodenum")

#: Seconds one CLI call may take before it counts as a hang.
CALL_TIMEOUT = float(os.environ.get("DVHEVAL_FUZZ_TIMEOUT", "60"))

# ------------------------------------------------------------------ profiles
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much],
)
settings.register_profile(
    "ci", max_examples=6, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON)
settings.register_profile("long", max_examples=60, database=None, print_blob=True, **_COMMON)

PROFILE = ("long" if os.environ.get("DVHEVAL_FUZZ", "").lower() == "long"
           else os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"
#: Examples per test relative to the ``ci`` count (the long profile runs 8 times as
#: many; ``DVHEVAL_FUZZ_SCALE`` overrides).
SCALE = int(os.environ.get("DVHEVAL_FUZZ_SCALE", "8" if PROFILE == "long" else "1"))


def fuzz_settings(n: int) -> settings:
    """Settings of one fuzz test: the active profile with ``n`` ci examples (scaled)."""
    return settings(settings.get_profile(PROFILE), max_examples=n * SCALE)


# ------------------------------------------------------------------- running
@dataclass
class Run:
    """What one CLI call gave."""

    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def describe(self) -> str:
        return (f"dvheval {' '.join(self.args)} -> exit {self.exit_code}\n"
                f"stderr: {self.stderr[:2000]!r}\nstdout: {self.stdout[:1000]!r}")


_LOCK = threading.Lock()


def invoke(args: Sequence[str], timeout: float = CALL_TIMEOUT) -> Run:
    """Run ``dvheval ARGS`` in-process (typer's CliRunner) in a thread with a time limit.

    A call that does not finish within ``timeout`` seconds fails the example
    (the thread is left behind as a daemon).
    """
    from typer.testing import CliRunner

    from dvheval.cli import app

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = CliRunner().invoke(app, list(args), catch_exceptions=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            box["error"] = exc

    with _LOCK:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"hang: dvheval {' '.join(args)} did not finish in "
                                 f"{timeout:g} s")
    if "error" in box:
        raise AssertionError(f"the runner itself failed: {box['error']!r}")
    res = box["result"]
    try:
        stderr = res.stderr
    except ValueError:
        stderr = ""
    return Run(list(args), res.exit_code, res.stdout, stderr, res.exception)


# ---------------------------------------------------------------- properties
_EXC_NAMES = re.compile(
    r"\b(Traceback \(most recent call last\)|ValueError|TypeError|KeyError|IndexError|"
    r"AttributeError|ZeroDivisionError|OverflowError|RecursionError|MemoryError|"
    r"AssertionError|RuntimeError|UnicodeDecodeError|UnicodeEncodeError|NameError|"
    r"InvalidDicomError|BytesLengthException|NotImplementedError|LinAlgError|"
    r"FloatingPointError|struct\.error|re\.error|yaml\.\w+Error|ScannerError|ParserError|"
    r"ComposerError|ConstructorError|ReaderError|GEOSException)\b")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _reject_constant(name: str) -> float:
    raise AssertionError(f"JSON output holds the non-standard constant {name}")


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity."""
    return json.loads(text, parse_constant=_reject_constant)


def _walk_numbers(obj: Any) -> None:
    if isinstance(obj, float):
        assert math.isfinite(obj), f"non-finite number {obj!r} in JSON"
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            _walk_numbers(v)


def check_run(run: Run, fmt: str, names: Sequence[str], command: str = "check") -> Any:
    """Assert the properties every run has; return the parsed report (or None).

    ``names`` are the input file names an error line may name. Returns the
    parsed JSON document for ``--format json`` with exit 0/1 (``dvh``: 0).
    """
    info = run.describe()
    assert run.exit_code in (0, 1, 2), f"undocumented exit code\n{info}"
    exc = run.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"uncaught {type(exc).__name__}: {exc}\n{info}")
    both = run.stdout + run.stderr
    m = _EXC_NAMES.search(run.stderr) or (
        _EXC_NAMES.search(run.stdout) if fmt in ("text", "junit") else None)
    assert m is None, f"exception text {m.group(0)!r} in the output\n{info}"
    assert "Traceback" not in both, f"traceback in the output\n{info}"
    if command == "dvh":
        assert run.exit_code in (0, 2), f"dvh exits 0 or 2 only\n{info}"
    if run.exit_code == 2:
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert errors, f"exit 2 without an 'error:' line\n{info}"
        assert any(n in ln for ln in errors for n in names), (
            f"no error line names the file ({', '.join(names)})\n{info}")
        assert not run.stdout.strip(), f"exit 2 but a report on stdout\n{info}"
        for ln in errors:
            assert not _CONTROL.search(ln), f"control character in an error line\n{info}"
        return None
    out = run.stdout
    if fmt == "json":
        doc = parse_json(out)
        _walk_numbers(doc)
        if command == "check":
            assert doc["exit_code"] == run.exit_code, f"JSON exit_code differs\n{info}"
            if run.exit_code == 0:
                assert doc["verdict"] in ("PASS", "ACCEPTABLE"), info
                for c in doc["constraints"]:
                    if c["priority"] == "hard":
                        assert c["verdict"] in ("PASS", "ACCEPTABLE", "NOT_APPLICABLE"), (
                            f"exit 0 with hard constraint {c['id']} {c['verdict']}\n{info}")
        return doc
    if fmt == "junit":
        try:
            ET.fromstring(out)
        except ET.ParseError as exc_:
            raise AssertionError(f"JUnit output does not parse: {exc_}\n{info}") from None
    elif fmt in ("text", "markdown"):
        assert not _CONTROL.search(out), f"raw control character in {fmt} output\n{info}"
    return None


def gy_values(doc: dict) -> dict[str, float]:
    """Constraint id -> value for every computed dose (Gy) value of a check report."""
    return {c["id"]: c["value"] for c in doc["constraints"]
            if c["value"] is not None and c["limit_unit"] == "Gy"}


# ------------------------------------------------------------------- files
def hashes(paths: Sequence[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def copy_plan(dest: Path) -> Path:
    plan = dest / "plan"
    plan.mkdir()
    for f in FILES:
        shutil.copyfile(SAMPLE / f, plan / f)
    return plan


def set_raw(ds: pydicom.Dataset, keyword: str, text: str | bytes) -> None:
    """Store ``text`` as the raw value of ``keyword`` (any bytes, no conversion)."""
    tag = Tag(tag_for_keyword(keyword))
    vr = dictionary_VR(tag)
    raw = text.encode("latin-1") if isinstance(text, str) else text
    if len(raw) % 2:
        raw += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    ds._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)


def edit(path: Path, fn: Callable[[pydicom.Dataset], None]) -> None:
    """Read ``path``, apply ``fn`` to the dataset and write it back."""
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=False)


def roi_number(ds: pydicom.Dataset, name: str) -> int:
    for item in ds.StructureSetROISequence:
        if item.ROIName == name:
            return int(item.ROINumber)
    raise KeyError(name)


def roi_contours(ds: pydicom.Dataset, name: str) -> pydicom.Dataset:
    number = roi_number(ds, name)
    for item in ds.ROIContourSequence:
        if int(item.ReferencedROINumber) == number:
            return item
    raise KeyError(name)


@dataclass
class Expect:
    """What a mutation allows: ``error`` exit 2, ``close`` not 0, ``pass`` exit 0, ``any``."""

    kind: str
    why: str = ""
    scale: float | None = None
    extra: dict = field(default_factory=dict)

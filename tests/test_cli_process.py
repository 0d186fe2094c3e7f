"""The console-script entry point (``dvheval.cli.run``) as a whole process.

``run`` ends the process without the interpreter's teardown once a command
has returned. Whatever the command wrote must still be complete, its exit
code unchanged, and exit handlers run; where something else may still be
running, or the exit code is not a number, the interpreter exits as usual.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest

import dvheval.cli as cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"


def dvheval(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``dvheval ARGS`` through the console-script entry point, in a new interpreter."""
    code = prelude + "import sys\nfrom dvheval.cli import run\nsys.argv[0] = 'dvheval'\nrun()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def roi_names() -> list[str]:
    """The sample structure set's ROI names, read by pydicom itself."""
    ds = pydicom.dcmread(SAMPLE / "RTSTRUCT.dcm", stop_before_pixels=True)
    return [str(item.ROIName) for item in ds.StructureSetROISequence]


def test_json_on_stdout_is_complete_and_exit_0():
    proc = dvheval("dvh", str(SAMPLE), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole document, parsed
    assert [s["name"] for s in doc["structures"]] == roi_names()


def test_table_written_to_a_file_is_complete(tmp_path):
    out = tmp_path / "dvh.txt"
    proc = dvheval("dvh", str(SAMPLE), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    for name in roi_names():
        assert name in text
    assert text.endswith("\n")


def test_failing_plan_keeps_exit_1_and_its_report():
    # twice the prescription: the target objectives' unacceptable floor closes the gate
    proc = dvheval("check", str(SAMPLE), "-p", PROTOCOL, "--rx", "PTV30=60", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "FAIL" and doc["exit_code"] == 1


def test_input_error_keeps_exit_2_and_its_message(tmp_path):
    missing = tmp_path / "no-such-plan"
    proc = dvheval("dvh", str(missing))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"error: {missing}" in proc.stderr


def test_exit_handlers_run_and_output_is_flushed():
    prelude = "import atexit\natexit.register(lambda: print('handler ran'))\n"
    proc = dvheval("--version", prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["dvheval 0.1.0", "handler ran"]


def test_numerical_thread_pools_limited_unless_set():
    prelude = ("import atexit, os\n"
               "atexit.register(lambda: print(os.environ['OPENBLAS_NUM_THREADS'],"
               " os.environ['OMP_NUM_THREADS']))\n")
    assert dvheval("--version", prelude=prelude).stdout.split()[-2:] == ["1", "1"]
    prelude = "import os\nos.environ['OPENBLAS_NUM_THREADS'] = '3'\n" + prelude
    assert dvheval("--version", prelude=prelude).stdout.split()[-2:] == ["3", "1"]


def test_unused_modules_are_not_loaded_by_a_command():
    # pydicom imports urllib.request (and with it http.client and ssl) and PIL's colour
    # management (PIL._imagingcms) at its own import; no command uses them
    # and Pillow's EXIF and TIFF tag tables (created then, run only when first used)
    prelude = ("import atexit, sys\n"
               "atexit.register(lambda: print(sorted(m for m in ('http.client', 'ssl', "
               "'PIL._imagingcms') if m in sys.modules), sorted(m for m in ('PIL.ExifTags', "
               "'PIL.TiffTags') if type(sys.modules.get(m)) is type(sys)), "
               "'pydicom' in sys.modules))\n")
    proc = dvheval("dvh", str(SAMPLE), "-s", "SpinalCord", "--format", "json", prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[] [] True"


DEFERRED_USE = """
import sys
from dvheval.cli import DEFERRED_MODULES, defer_imports
defer_imports(DEFERRED_MODULES)
import pydicom
before = sorted(m for m in ('http.client', 'ssl', 'PIL._imagingcms') if m in sys.modules)
lazy = sorted(m for m in ('PIL.ExifTags', 'PIL.TiffTags') if type(sys.modules[m]) is not type(sys))
import urllib.request
request = urllib.request.Request("https://example.org/a?b=1")
from PIL import ImageCms
profile = ImageCms.createProfile("sRGB")
import pydicom.examples
ct = pydicom.examples.get_path("ct")
from io import BytesIO
from PIL import ExifTags, Image, TiffTags
image = Image.new("L", (4, 3))
exif = image.getexif()
exif[ExifTags.Base.Orientation] = 3
saved = BytesIO()
image.save(saved, "TIFF", exif=exif)
saved.seek(0)
reread = Image.open(saved)
print(before, lazy, request.host, request.selector, type(profile).__name__, ct.name,
      'http.client' in sys.modules, type(urllib.request) is type(sys),
      TiffTags.lookup(256).name, reread.getexif()[274], reread.size)
"""


def test_deferred_modules_work_when_used():
    proc = subprocess.run([sys.executable, "-c", DEFERRED_USE], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "['PIL.ExifTags',", "'PIL.TiffTags']", "example.org",
                                   "/a?b=1", "CmsProfile", "CT_small.dcm", "True", "True",
                                   "ImageWidth", "3", "(4,", "3)"]


def _run_in_process(monkeypatch, code: object) -> object:
    """Call ``run`` here with ``main`` ending in ``SystemExit(code)``; what it raised.

    Reaching the quick exit would end this test process: the callers set up
    the cases where ``run`` must leave through ``sys.exit`` instead.
    """
    def fake_main() -> None:
        raise SystemExit(code)

    monkeypatch.setattr(cli, "main", fake_main)
    # (run's process settings, kept away from this test process)
    monkeypatch.setattr(cli.gc, "set_threshold", lambda *thresholds: None)
    monkeypatch.setattr(cli, "defer_imports", lambda names: None)
    for name in cli._ONE_THREAD:
        monkeypatch.setenv(name, "1")
    with pytest.raises(SystemExit) as caught:
        cli.run()
    return caught.value.code


def test_another_thread_running_means_a_normal_exit(monkeypatch):
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert _run_in_process(monkeypatch, 1) == 1
    finally:
        stop.set()
        worker.join()


def test_text_exit_code_means_a_normal_exit(monkeypatch):
    assert _run_in_process(monkeypatch, "stopped") == "stopped"


@pytest.mark.parametrize("args", [
    ("dvh", "--help"), ("check", "--help"), ("protocol", "--help"), ("protocol", "list"),
    ("batch", "--help"), ("cohort", "--help"), ("compare-tps", "--help"), ("--help",),
    ("dvh", "--no-such-option"), ("nosuch",),
], ids=lambda args: " ".join(args))
def test_one_command_built_alone_behaves_as_in_the_whole_app(args):
    # run() builds only the command named first; the whole app must say the same
    alone = dvheval(*args)
    whole = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom dvheval.cli import app\nsys.argv[0] = 'dvheval'\n"
         "app()\n", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert (alone.returncode, alone.stdout, alone.stderr) == (
        whole.returncode, whole.stdout, whole.stderr)
    assert alone.stdout or alone.stderr


def test_jpeg_2000_dose_is_decoded_by_pillow_in_the_console_script(tmp_path):
    # pydicom decodes JPEG 2000 through Pillow, whose image module reads the tag
    # tables that the console script defers: the lossless dose must give the same
    # DVHs as the uncompressed one
    from io import BytesIO

    import numpy as np
    from PIL import Image, features
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    if not features.check_codec("jpg_2000"):
        pytest.skip("this Pillow has no JPEG 2000 codec")
    ds = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    frames = ds.pixel_array
    assert frames.dtype == np.uint16 and int(frames.max()) > 255  # (all 16 bits in use)
    streams = []
    for frame in frames:
        out = BytesIO()
        Image.fromarray(frame).save(out, "JPEG2000", irreversible=False, no_jp2=True)
        streams.append(out.getvalue())
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    plan = tmp_path / "plan"
    plan.mkdir()
    ds.save_as(plan / "RTDOSE.dcm", enforce_file_format=True)
    for name in ("RTSTRUCT.dcm", "RTPLAN.dcm"):
        (plan / name).write_bytes((SAMPLE / name).read_bytes())
    assert pydicom.dcmread(plan / "RTDOSE.dcm").file_meta.TransferSyntaxUID == JPEG2000Lossless

    def structures(folder: Path) -> list[dict[str, object]]:
        proc = dvheval("dvh", str(folder), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        return [{k: s[k] for k in ("name", "volume_cc", "metrics", "dvh")}
                for s in json.loads(proc.stdout)["structures"]]

    assert structures(plan) == structures(SAMPLE)

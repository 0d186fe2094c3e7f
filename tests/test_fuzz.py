"""Property-based fuzzing of the command line (Hypothesis).

Copies of the shipped sample plan are mutated structurally with pydicom and
protocol files are mutated as text; every example runs ``dvheval check`` (or
``dvheval dvh``) in-process with a time limit and must give a correct
result or a clean error:

* the exit code is 0, 1 or 2, with no traceback or exception name in the output;
* JSON parses without NaN or Infinity and agrees with the exit code, JUnit
  parses as XML, text has no raw control characters;
* exit 2 comes with an ``error:`` line naming the file;
* the input files are never modified;
* a mutation that corrupts the dose, the grid, a contour the protocol uses,
  the identity or the references of the plan never gives exit 0, and a
  provably harmless one gives the same verdicts.

Profiles (see ``tests/fuzz_support.py``): ``ci`` (default, few derandomized
examples, no shrinking) and ``long`` (``DVHEVAL_FUZZ=long`` or
``HYPOTHESIS_PROFILE=long``: many random examples, shrinking on).
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from .fuzz_support import (
    FILES,
    GATED_ROIS,
    PROTOCOL,
    PROTOCOLS,
    SAMPLE,
    UNUSED_ROIS,
    USED_ROIS,
    Expect,
    check_run,
    copy_plan,
    edit,
    fuzz_settings,
    gy_values,
    hashes,
    invoke,
    roi_contours,
    roi_number,
    set_raw,
)

pytestmark = pytest.mark.fuzz

#: Absolute tolerance (Gy) of a recomputed dose metric (DVH binning).
TOL_GY = 0.05


class Mutation:
    """One edit of a plan copy (``apply(plan_folder)``) and what the result may be."""

    def __init__(self, label: str, apply: Callable[[Path], None], expect: Expect) -> None:
        self.label, self.apply, self.expect = label, apply, expect

    def __repr__(self) -> str:
        return f"Mutation({self.label!r}, expect {self.expect.kind}: {self.expect.why})"


class Baseline(dict):
    """What the clean plan gives (a dict with a short repr for failure reports)."""

    def __repr__(self) -> str:
        return "<baseline of the clean sample plan>"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def baseline() -> dict:
    """The clean sample plan: its check report and the geometry the oracles need."""
    run = invoke(["check", str(SAMPLE), "-p", PROTOCOL, "--format", "json"])
    doc = check_run(run, "json", FILES)
    assert run.exit_code == 0 and doc["verdict"] == "PASS", run.describe()
    dose = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    ss = pydicom.dcmread(SAMPLE / "RTSTRUCT.dcm")
    boxes = []
    for name in USED_ROIS:
        pts = np.concatenate([np.asarray(c.ContourData, float).reshape(-1, 3)
                              for c in roi_contours(ss, name).ContourSequence])
        boxes.append((pts.min(axis=0), pts.max(axis=0)))
    dvh = invoke(["dvh", str(SAMPLE), "--format", "json", "-s", "SpinalCord", "-m", "Dmax"])
    dvh_doc = check_run(dvh, "json", FILES, command="dvh")
    cord_dmax = next(s["metrics"]["Dmax"] for s in dvh_doc["structures"]
                     if s["name"] == "SpinalCord")
    return Baseline({
        "doc": doc,
        "values": gy_values(doc),
        "verdicts": {c["id"]: c["verdict"] for c in doc["constraints"]},
        "scaling": float(dose.DoseGridScaling),
        "shape": (int(dose.NumberOfFrames), int(dose.Rows), int(dose.Columns)),
        "origin": np.asarray(dose.ImagePositionPatient, float),
        "spacing": np.asarray(dose.PixelSpacing, float),
        "offsets": np.asarray(dose.GridFrameOffsetVector, float),
        "boxes": boxes,
        "cord_dmax": cord_dmax,
        "sizes": {f: (SAMPLE / f).stat().st_size for f in FILES},
    })


# ------------------------------------------------------------ plan mutations
def _dose(fn):
    return lambda plan: edit(plan / "RTDOSE.dcm", fn)


def _ss(fn):
    return lambda plan: edit(plan / "RTSTRUCT.dcm", fn)


def _rtplan(fn):
    return lambda plan: edit(plan / "RTPLAN.dcm", fn)


def _raw(keyword: str, text: str):
    return lambda ds: set_raw(ds, keyword, text)


def _set(keyword: str, value):
    return lambda ds: setattr(ds, keyword, value)


SCALE_CLOSE = (0.0, 0.5, 2.0, 0.25, 4.0, 10.0, 1e-6, 1e6, 1.1, 1.2)
SCALE_PASS = (0.999, 1.001, 1.004, 0.996)
SCALE_ERROR = ("nan", "inf", "-inf", "abc", "", "1e400", "0.0006\\0.0006", "0x1p-11")


@st.composite
def dose_scaling(draw) -> Mutation:
    """DoseGridScaling times a factor, or replaced by an unusable value."""
    s0 = 0.00062651512463
    kind = draw(st.sampled_from(["close", "pass", "error", "negative"]))
    if kind == "error":
        text = draw(st.sampled_from(SCALE_ERROR))
        return Mutation(f"DoseGridScaling = {text!r}", _dose(_raw("DoseGridScaling", text)),
                        Expect("error", "unusable DoseGridScaling"))
    if kind == "negative":
        text = f"{-s0:.10g}"
        return Mutation(f"DoseGridScaling = {text}", _dose(_raw("DoseGridScaling", text)),
                        Expect("close", "negative dose"))
    f = draw(st.sampled_from(SCALE_CLOSE if kind == "close" else SCALE_PASS))
    text = f"{s0 * f:.10g}"
    why = (f"the dose scaled by {f:g}: a limit is broken, the dose is implausible, or the "
           "whole dose is off by a factor" if kind == "close"
           else f"the dose scaled by {f:g} keeps every limit")
    return Mutation(f"DoseGridScaling x {f:g}", _dose(_raw("DoseGridScaling", text)),
                    Expect(kind, why, scale=f))


def _offsets(base: dict) -> list[float]:
    return [float(v) for v in base["offsets"]]


def _fmt(values) -> str:
    return "\\".join(f"{v:g}" for v in values)


@st.composite
def dose_header(draw, base: dict) -> Mutation:
    """A hostile value of a number the engine reads from the RTDOSE header."""
    g = _offsets(base)
    nf, rows, cols = base["shape"]
    dup = list(g)
    dup[3] = dup[2]
    nan_g = list(g)
    nan_g[5] = math.nan
    raw_cases = {
        "PixelSpacing": [("0\\0", "error"), ("-2.5\\-2.5", "error"), ("nan\\nan", "error"),
                         ("inf\\2.5", "error"), ("2.5", "error"), ("2.5\\2.5\\2.5", "error"),
                         ("abc\\2.5", "error"), ("", "error"), ("1e400\\2.5", "error"),
                         ("1e6\\1e6", "close"), ("1e-6\\1e-6", "close")],
        "ImagePositionPatient": [("nan\\0\\0", "error"), ("-172.5\\-122.5", "error"),
                                 ("1\\2\\3\\4", "error"), ("", "error"),
                                 ("inf\\-122.5\\-75", "error"), ("abc\\1\\2", "error"),
                                 ("1e6\\-122.5\\-75", "close"),
                                 ("-172.5\\-122.5\\1e7", "close")],
        "ImageOrientationPatient": [("0\\0\\0\\0\\0\\0", "error"), ("1\\0\\0\\1\\0\\0", "error"),
                                    ("nan\\0\\0\\0\\1\\0", "error"), ("1\\0\\0\\0\\1", "error"),
                                    ("", "error"), ("1\\0\\0\\0\\1\\0\\0", "error")],
        "GridFrameOffsetVector": [(_fmt(g[:-1]), "error"), (_fmt(g + [g[-1] + 2.5]), "error"),
                                  (_fmt([0.0] * nf), "close"), (_fmt(dup), "close"),
                                  ("\\".join("nan" if math.isnan(v) else f"{v:g}"
                                             for v in nan_g), "error"),
                                  ("", "error"), (_fmt([v + 1000 for v in g]), "close")],
        "NumberOfFrames": [(t, "error") for t in ("0", str(nf - 1), str(nf + 1), "-1", "abc",
                                                  "", "1e400", "99999999999")],
        "DoseUnits": [("RELATIVE", "close"), ("XYZ", "close"), ("", "close")],
    }
    int_cases = {
        "Rows": [(v, "error") for v in (0, rows - 1, rows + 1, 1, 65535)],
        "Columns": [(v, "error") for v in (0, cols - 1, cols + 1, 65535)],
        "BitsAllocated": [(v, "error") for v in (0, 8, 32, 12, 64, 1)],
        "BitsStored": [(v, "close") for v in (0, 8, 12, 15, 17, 32)],
        "HighBit": [(16, "close"), (31, "close"), (255, "close"), (14, "any"), (7, "any")],
        "PixelRepresentation": [(1, "close"), (2, "error"), (65535, "error")],
    }
    data_cases = ["short2", "short_row", "half", "empty", "extra2"]
    group = draw(st.sampled_from(["raw", "int", "data"]))
    if group == "raw":
        kw = draw(st.sampled_from(sorted(raw_cases)))
        text, kind = draw(st.sampled_from(raw_cases[kw]))
        return Mutation(f"RTDOSE {kw} = {text[:60]!r}", _dose(_raw(kw, text)),
                        Expect(kind, f"hostile {kw}"))
    if group == "int":
        kw = draw(st.sampled_from(sorted(int_cases)))
        value, kind = draw(st.sampled_from(int_cases[kw]))
        return Mutation(f"RTDOSE {kw} = {value}", _dose(_set(kw, value)),
                        Expect(kind, f"hostile {kw}"))
    case = draw(st.sampled_from(data_cases))
    n = 2 * nf * rows * cols
    cut = {"short2": n - 2, "short_row": n - 2 * cols, "half": n // 2,
           "empty": 0, "extra2": n + 2}[case]

    def pixel(ds):
        data = bytes(ds.PixelData)
        ds.PixelData = data[:cut] if cut <= n else data + b"\x00" * (cut - n)
    kind = "any" if case == "extra2" else "error"
    return Mutation(f"RTDOSE PixelData {case} ({cut} of {n} bytes)", _dose(pixel),
                    Expect(kind, "PixelData length does not match the header"))


@st.composite
def contour_values(draw) -> Mutation:
    """Hostile ContourData of one contour of an ROI."""
    name = draw(st.sampled_from(USED_ROIS + ("Liver", "BODY")))
    index = draw(st.integers(0, 60))
    case = draw(st.sampled_from(["nan", "inf", "huge", "shift", "len", "count", "nonplanar",
                                 "degenerate", "text", "empty"]))
    kind = "close" if name in USED_ROIS else "any"

    def mutate(ds):
        seq = roi_contours(ds, name).ContourSequence
        c = seq[index % len(seq)]
        pts = [float(v) for v in c.ContourData]
        if case in ("nan", "inf", "huge"):
            pts[3] = {"nan": math.nan, "inf": math.inf, "huge": 1e30}[case]
        elif case == "shift":
            pts = [v + 1e4 if i % 3 != 2 else v for i, v in enumerate(pts)]
        elif case == "len":
            pts = pts[:-1]
        elif case == "nonplanar":
            pts[5] += 3.0
        elif case == "degenerate":
            pts = pts[:3] * (len(pts) // 3)
        elif case == "count":
            c.NumberOfContourPoints = int(c.NumberOfContourPoints) + 5
        texts = ["nan" if math.isnan(v) else "inf" if math.isinf(v) else f"{v:.6g}"
                 for v in pts]
        if case == "text":
            texts[4] = "abc"
        if case == "empty":
            texts = []
        set_raw(c, "ContourData", "\\".join(texts))

    return Mutation(f"ContourData of {name} contour {index}: {case}", _ss(mutate),
                    Expect(kind, f"unusable contour of {name}"))


@st.composite
def rtplan_numbers(draw) -> Mutation:
    """Hostile fractions and prescription doses of the RTPLAN."""
    which = draw(st.sampled_from(["fractions", "rx0", "rx1"]))
    if which == "fractions":
        text = draw(st.sampled_from(["0", "-1", "5", "1", "20", "1000000", "abc", "nan",
                                     "1e400", "10\\10", "99999999999999999999", ""]))
        kind = "any" if text == "" else "close"

        def mutate(ds):
            set_raw(ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", text)
        return Mutation(f"RTPLAN NumberOfFractionsPlanned = {text!r}", _rtplan(mutate),
                        Expect(kind, "fractions differ from the protocol's 10 or are unusable"))
    i = 0 if which == "rx0" else 1
    rx = (40.0, 30.0)[i]
    close = ["0", f"{-rx:g}", "nan", "inf", "1e400", f"{rx / 2:g}", f"{rx * 2:g}",
             f"{rx / 10:g}", f"{rx * 10:g}", "abc", "1e30"]
    harmless = [f"{rx * 1.005:g}", f"{rx * 0.9975:g}", f"{rx:g}"]
    text = draw(st.sampled_from(close + harmless))
    kind = "pass" if text in harmless else "close"

    def mutate(ds):
        set_raw(ds.DoseReferenceSequence[i], "TargetPrescriptionDose", text)
    return Mutation(f"RTPLAN TargetPrescriptionDose[{i}] ({rx:g} Gy) = {text!r}",
                    _rtplan(mutate), Expect(kind, "prescription against the protocol (1 %)"))


def _new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


@st.composite
def uids(draw) -> Mutation:
    """Identity and reference UIDs changed in one file (mismatch) or in all (consistent)."""
    case = draw(st.sampled_from(["pid1", "study1", "for_dose", "for_ss", "ref_plan",
                                 "ref_ss", "plan_sop", "ss_sop", "pid_all", "study_all",
                                 "for_all"]))
    hostile = draw(st.booleans())
    value = (draw(st.sampled_from(["1.2.3.abc", "1." + "9" * 80, "1.2\x00.3", " ", "1..2"]))
             if hostile and case not in ("pid1", "pid_all") else _new_uid())
    if case in ("pid1", "pid_all"):
        value = draw(st.sampled_from(["OTHER-PATIENT", "DVHEVAL-SAMPLE-02", "x" * 200]))
    target = draw(st.sampled_from(FILES))

    def set_uid(ds, kw):
        set_raw(ds, kw, value)

    def for_ss(ds):
        set_uid(ds, "FrameOfReferenceUID")
        for item in ds.ReferencedFrameOfReferenceSequence:
            set_uid(item, "FrameOfReferenceUID")
        for item in ds.StructureSetROISequence:
            set_uid(item, "ReferencedFrameOfReferenceUID")

    def sop(fname):
        def apply(plan):
            ds = pydicom.dcmread(plan / fname)
            set_uid(ds, "SOPInstanceUID")
            set_raw(ds.file_meta, "MediaStorageSOPInstanceUID", value)
            ds.save_as(plan / fname, enforce_file_format=False)
        return apply

    def every(fn):
        def apply(plan):
            for f in FILES:
                edit(plan / f, fn)
        return apply

    one = {
        "pid1": (lambda plan: edit(plan / target, lambda ds: set_uid(ds, "PatientID"))),
        "study1": (lambda plan: edit(plan / target,
                                     lambda ds: set_uid(ds, "StudyInstanceUID"))),
        "for_dose": _dose(lambda ds: set_uid(ds, "FrameOfReferenceUID")),
        "for_ss": _ss(for_ss),
        "ref_plan": _dose(lambda ds: set_uid(ds.ReferencedRTPlanSequence[0],
                                             "ReferencedSOPInstanceUID")),
        "ref_ss": _rtplan(lambda ds: set_uid(ds.ReferencedStructureSetSequence[0],
                                             "ReferencedSOPInstanceUID")),
        "plan_sop": sop("RTPLAN.dcm"),
        "ss_sop": sop("RTSTRUCT.dcm"),
    }
    if case in one:
        where = f" in {target}" if case in ("pid1", "study1") else ""
        return Mutation(f"{case}{where} = {value[:40]!r}", one[case],
                        Expect("close", "identity or reference mismatch"))

    def for_all(ds):
        if ds.Modality == "RTSTRUCT":
            for_ss(ds)
        else:
            set_uid(ds, "FrameOfReferenceUID")

    fn = {"pid_all": lambda ds: set_uid(ds, "PatientID"),
          "study_all": lambda ds: set_uid(ds, "StudyInstanceUID"),
          "for_all": for_all}[case]
    kind = "any" if hostile or len(value) > 64 else "pass"
    return Mutation(f"{case} = {value[:40]!r}", every(fn),
                    Expect(kind, "the same change in every file"))


HOSTILE = ["\x1b[31m", "\x1b]0;title\x07", "\r\n", "\r", "\n", "\x00", "[/]", "[bold red]",
           "=cmd|' /C calc'!A0", "<script>alert(1)</script>", "\x08", "\t", "%s%n{0}", "]]>",
           "&amp;", "'\"", "\\", "error: forged", "\x7f", "A" * 3000, "|", "**", "# h"]


@st.composite
def hostile_text(draw) -> str:
    return "".join(draw(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4)))


@st.composite
def hostile_strings(draw) -> Mutation:
    """Descriptive strings (and unused ROI names) set to hostile text."""
    text = draw(hostile_text())
    field_ = draw(st.sampled_from(["PatientName", "SeriesDescription", "StructureSetLabel",
                                   "RTPlanLabel", "Manufacturer", "StudyID", "roi",
                                   "ROIObservationLabel"]))
    if field_ == "roi":
        name = draw(st.sampled_from(UNUSED_ROIS))

        def rename(ds):
            for item in ds.StructureSetROISequence:
                if item.ROIName == name:
                    set_raw(item, "ROIName", text)
        return Mutation(f"ROIName {name} = {text[:80]!r}", _ss(rename),
                        Expect("any", "hostile ROI name", extra={"text": text}))
    if field_ == "ROIObservationLabel":
        def label(ds):
            for item in ds.RTROIObservationsSequence:
                set_raw(item, "ROIObservationLabel", text)
        return Mutation(f"ROIObservationLabel = {text[:80]!r}", _ss(label),
                        Expect("no1", "hostile label", extra={"text": text}))
    files = {"StructureSetLabel": ["RTSTRUCT.dcm"], "RTPlanLabel": ["RTPLAN.dcm"]}.get(
        field_, list(FILES))

    def apply(plan):
        for f in files:
            edit(plan / f, lambda ds: set_raw(ds, field_, text))
    return Mutation(f"{field_} in {','.join(files)} = {text[:80]!r}", apply,
                    Expect("no1", "a descriptive string", extra={"text": text}))


@st.composite
def duplicates(draw) -> Mutation:
    """A duplicated contour or a duplicated ROI."""
    case = draw(st.sampled_from(["contour", "roi", "alias"]))
    if case == "alias":
        # an ROI carrying the structure's canonical name wins over alias matches
        # (protocols/README.md); without one, two matching ROIs are ambiguous
        name, alias = draw(st.sampled_from([("PTV40", "PTV_4000"), ("SpinalCord", "Myelon"),
                                            ("Kidney_L", "Niere li"), ("PTV30", "PTV_Low"),
                                            ("GTV40", "GTV_4000"), ("CTV30", "CTV_30")]))
    else:
        name = draw(st.sampled_from(USED_ROIS + UNUSED_ROIS[:2]))
        alias = name
    index = draw(st.integers(0, 60))

    def dup_contour(ds):
        seq = roi_contours(ds, name).ContourSequence
        seq.append(copy.deepcopy(seq[index % len(seq)]))

    def dup_roi(ds):
        number = roi_number(ds, name)
        new = 99
        for seq_name, key in (("StructureSetROISequence", "ROINumber"),
                              ("ROIContourSequence", "ReferencedROINumber"),
                              ("RTROIObservationsSequence", "ReferencedROINumber")):
            seq = getattr(ds, seq_name)
            item = next(i for i in seq if int(getattr(i, key)) == number)
            clone = copy.deepcopy(item)
            setattr(clone, key, new)
            if seq_name == "StructureSetROISequence":
                clone.ROIName = alias
            if seq_name == "RTROIObservationsSequence":
                clone.ObservationNumber = new
            seq.append(clone)

    if case == "contour":
        kind = "close" if name in GATED_ROIS + ("Kidney_L", "Kidney_R") else "any"
        return Mutation(f"duplicate contour {index} of {name}", _ss(dup_contour),
                        Expect(kind, "duplicated contour of a structure with a limit"))
    canonical = name in ("SpinalCord", "Kidney_L", "Kidney_R") or alias == "PTV_Low"
    kind = "close" if name in USED_ROIS and not (case == "alias" and canonical) else "any"
    return Mutation(f"duplicate ROI {name} as {alias!r}", _ss(dup_roi),
                    Expect(kind, "two ROIs match one protocol structure"))


DELETIONS = [
    ("RTDOSE.dcm", "PixelData", "error"), ("RTDOSE.dcm", "DoseGridScaling", "close"),
    ("RTDOSE.dcm", "PixelSpacing", "error"), ("RTDOSE.dcm", "ImagePositionPatient", "error"),
    ("RTDOSE.dcm", "ImageOrientationPatient", "error"),
    ("RTDOSE.dcm", "GridFrameOffsetVector", "error"), ("RTDOSE.dcm", "Rows", "error"),
    ("RTDOSE.dcm", "Columns", "error"), ("RTDOSE.dcm", "BitsAllocated", "error"),
    ("RTDOSE.dcm", "PixelRepresentation", "close"), ("RTDOSE.dcm", "NumberOfFrames", "close"),
    ("RTDOSE.dcm", "FrameOfReferenceUID", "close"), ("RTDOSE.dcm", "DoseUnits", "close"),
    ("RTDOSE.dcm", "BitsStored", "any"), ("RTDOSE.dcm", "HighBit", "any"),
    ("RTDOSE.dcm", "DoseType", "any"), ("RTDOSE.dcm", "DoseSummationType", "any"),
    ("RTDOSE.dcm", "ReferencedRTPlanSequence", "any"), ("RTDOSE.dcm", "PatientID", "any"),
    ("RTDOSE.dcm", "SamplesPerPixel", "any"), ("RTDOSE.dcm", "StudyInstanceUID", "any"),
    ("RTSTRUCT.dcm", "ROIContourSequence", "close"),
    ("RTSTRUCT.dcm", "StructureSetROISequence", "close"),
    ("RTSTRUCT.dcm", "RTROIObservationsSequence", "any"),
    ("RTSTRUCT.dcm", "ReferencedFrameOfReferenceSequence", "any"),
    ("RTSTRUCT.dcm", "FrameOfReferenceUID", "any"), ("RTSTRUCT.dcm", "PatientID", "any"),
    ("RTPLAN.dcm", "FractionGroupSequence", "any"), ("RTPLAN.dcm", "DoseReferenceSequence", "any"),
    ("RTPLAN.dcm", "ReferencedStructureSetSequence", "any"),
    ("RTPLAN.dcm", "SOPInstanceUID", "close"), ("RTPLAN.dcm", "PatientID", "any"),
]


@st.composite
def deletions(draw) -> Mutation:
    """An attribute, a sequence or part of an ROI deleted."""
    if draw(st.booleans()):
        fname, kw, kind = draw(st.sampled_from(DELETIONS))

        def apply(plan):
            edit(plan / fname, lambda ds: delattr(ds, kw))
        return Mutation(f"delete {kw} from {fname}", apply, Expect(kind, f"{kw} missing"))
    name = draw(st.sampled_from(USED_ROIS))
    what = draw(st.sampled_from(["ContourSequence", "ContourData", "ContourGeometricType"]))
    index = draw(st.integers(0, 60))

    def roi(ds):
        item = roi_contours(ds, name)
        if what == "ContourSequence":
            del item.ContourSequence
        else:
            c = item.ContourSequence[index % len(item.ContourSequence)]
            delattr(c, what)
    kind = ("close" if what != "ContourSequence" or name in GATED_ROIS else "any")
    return Mutation(f"delete {what} ({index}) of {name}", _ss(roi),
                    Expect(kind, "contours of a structure with a limit lost"))


@st.composite
def truncations(draw, base: dict) -> Mutation:
    """A file cut short."""
    fname = draw(st.sampled_from(FILES))
    size = base["sizes"][fname]
    cut = draw(st.one_of(st.sampled_from([0, 1, 128, 132, 200, size - 1, size - 2]),
                         st.integers(0, size - 1)))

    def apply(plan):
        p = plan / fname
        p.write_bytes(p.read_bytes()[:cut])
    if fname == "RTDOSE.dcm":
        kind = "error"
    elif fname == "RTSTRUCT.dcm" or cut >= 132:
        kind = "close"
    else:
        kind = "any"
    return Mutation(f"truncate {fname} to {cut} of {size} bytes", apply,
                    Expect(kind, "incomplete file"))


def _outside_boxes(base: dict, frame: int, row: int, col: int, margin: float = 10.0) -> bool:
    x = base["origin"][0] + col * base["spacing"][1]
    y = base["origin"][1] + row * base["spacing"][0]
    z = base["origin"][2] + base["offsets"][frame]
    p = np.array([x, y, z])
    return all(np.any(p < lo - margin) or np.any(p > hi + margin) for lo, hi in base["boxes"])


@st.composite
def pixel_flips(draw, base: dict) -> Mutation:
    """Bytes of PixelData flipped, with the dose change known exactly."""
    nf, rows, cols = base["shape"]
    high = draw(st.booleans())
    n = draw(st.integers(1, 3))
    voxels = draw(st.lists(st.tuples(st.integers(0, nf - 1), st.integers(0, rows - 1),
                                     st.integers(0, cols - 1)),
                           min_size=n, max_size=n, unique=True))
    mask = draw(st.integers(1, 255))
    outside = all(_outside_boxes(base, *v) for v in voxels)

    def flip(ds):
        data = bytearray(ds.PixelData)
        for f, r, c in voxels:
            data[2 * ((f * rows + r) * cols + c) + int(high)] ^= mask
        ds.PixelData = bytes(data)
    max_delta = (mask << 8 if high else mask) * base["scaling"]
    if not high:
        exp = Expect("pass", f"every voxel changes by at most {max_delta:.3f} Gy, less than "
                     "every margin", extra={"delta": max_delta})
    elif outside:
        exp = Expect("same", "voxels more than 10 mm from every structure the protocol uses",
                     extra={"delta": 0.0})
    else:
        exp = Expect("any", "a large change next to a structure")
    return Mutation(f"flip {'high' if high else 'low'} byte ^{mask:#x} of voxels "
                    f"{voxels}", _dose(flip), exp)


# ------------------------------------------------------------------ running
def _run_plan(m: Mutation, base: dict, fmt: str, command: str = "check"):
    """Apply ``m`` to a fresh copy, run the CLI, assert the common properties."""
    with tempfile.TemporaryDirectory(prefix="dvheval-fuzz-") as tmp:
        plan = copy_plan(Path(tmp))
        try:
            m.apply(plan)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError,
                AttributeError) as exc:
            assume(False)  # pydicom cannot write this edit: not a product input
            raise AssertionError(exc) from None
        files = sorted(plan.iterdir())
        before = hashes(files)
        if command == "check":
            args = ["check", str(plan), "-p", PROTOCOL, "--format", fmt]
        else:
            args = ["dvh", str(plan), "--format", "json", "-s", "SpinalCord", "-m", "Dmax"]
        run = invoke(args)
        assert hashes(files) == before, f"input files modified\n{run.describe()}"
        doc = check_run(run, fmt, list(FILES) + [plan.name], command=command)
        return run, doc


def _assert_expectation(m: Mutation, run, doc, base: dict) -> None:
    info = f"{m.label}: {m.expect.why}\n{run.describe()}"
    kind = m.expect.kind
    if kind == "error":
        assert run.exit_code == 2, f"unusable input not refused with exit 2\n{info}"
    elif kind == "close":
        assert run.exit_code != 0, f"gate open (exit 0) on data that cannot be trusted\n{info}"
    elif kind == "no1":
        assert run.exit_code in (0, 2), f"a descriptive string changed the verdict\n{info}"
    elif kind in ("pass", "same"):
        assert run.exit_code in ((0,) if kind == "pass" else (0, 1)), (
            f"a harmless change changed the gate\n{info}")
        if doc is None:
            return
        verdicts = {c["id"]: c["verdict"] for c in doc["constraints"]}
        assert verdicts == base["verdicts"], f"verdicts changed\n{info}"
        values = gy_values(doc)
        assert values.keys() == base["values"].keys(), f"values missing\n{info}"
        f = m.expect.scale or 1.0
        delta = m.expect.extra.get("delta", 0.0)
        for key, v0 in base["values"].items():
            if "EQD2" in key or "BED" in key:
                continue
            want = v0 * f
            assert abs(values[key] - want) <= delta + TOL_GY + 0.002 * abs(want), (
                f"{key}: {values[key]} Gy, expected {want:.4f} +- {delta + TOL_GY:.3f}\n{info}")


def _check_fmt(draw_fmt: str, m: Mutation) -> str:
    return "json" if m.expect.kind in ("pass", "same") else draw_fmt


FORMATS = st.sampled_from(["json", "json", "junit", "text"])


# --------------------------------------------------------------------- tests
@fuzz_settings(8)
@given(m=dose_scaling(), fmt=FORMATS)
def test_dose_scaling(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(8)
@given(data=st.data(), fmt=FORMATS)
def test_dose_header(baseline, data, fmt):
    m = data.draw(dose_header(baseline), label="mutation")
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(6)
@given(m=contour_values(), fmt=FORMATS)
def test_contour_values(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(6)
@given(m=rtplan_numbers(), fmt=FORMATS)
def test_rtplan_numbers(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(6)
@given(m=uids(), fmt=FORMATS)
def test_uids(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(6)
@given(m=hostile_strings(),
       fmt=st.sampled_from(["json", "junit", "text", "html", "markdown"]))
def test_hostile_strings(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, fmt)
    _assert_expectation(m, run, doc, baseline)
    if run.exit_code != 2 and fmt == "html":
        assert "<script>alert(1)" not in run.stdout, (
            f"{m.label}: injected markup in the HTML report\n{run.describe()}")


@fuzz_settings(5)
@given(m=duplicates(), fmt=FORMATS)
def test_duplicates(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(6)
@given(m=deletions(), fmt=FORMATS)
def test_deletions(baseline, m, fmt):
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(5)
@given(data=st.data(), fmt=FORMATS)
def test_truncation(baseline, data, fmt):
    m = data.draw(truncations(baseline), label="mutation")
    run, doc = _run_plan(m, baseline, _check_fmt(fmt, m))
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(5)
@given(data=st.data())
def test_pixel_flips(baseline, data):
    m = data.draw(pixel_flips(baseline), label="mutation")
    run, doc = _run_plan(m, baseline, "json")
    _assert_expectation(m, run, doc, baseline)


@fuzz_settings(4)
@given(data=st.data())
def test_dvh_json(baseline, data):
    m = data.draw(st.one_of(dose_scaling(), dose_header(baseline)), label="mutation")
    run, doc = _run_plan(m, baseline, "json", command="dvh")
    info = f"{m.label}\n{run.describe()}"
    if m.expect.kind == "error":
        assert run.exit_code == 2, f"unusable input not refused with exit 2\n{info}"
    if m.expect.scale is not None and 0.1 <= m.expect.scale <= 10:
        assert run.exit_code == 0, info
        dmax = next(s["metrics"]["Dmax"] for s in doc["structures"]
                    if s["name"] == "SpinalCord")
        want = baseline["cord_dmax"] * m.expect.scale
        assert dmax == pytest.approx(want, rel=2e-3, abs=TOL_GY), info


# -------------------------------------------------------- protocol mutations
BASE_PROTOCOL = PROTOCOLS / f"{PROTOCOL}.yaml"


def _bomb(levels: int = 9, width: int = 10) -> str:
    lines = ["x0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _flow_bomb(levels: int = 9, width: int = 10) -> str:
    items = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        items.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "[" + ", ".join(items) + "]"


def _notes(text: str, value: str) -> str:
    """The protocol with its last block, ``notes``, replaced by ``value``."""
    return text[:text.index("\nnotes:")] + f"\nnotes: {value}\n"


SENTINEL = Path(tempfile.gettempdir()) / "dvheval-fuzz-python-tag-ran"


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


class ProtocolMutation:
    """A mutated protocol file: label, bytes, and ``error`` (exit 2) or ``close`` (not 0)."""

    def __init__(self, label: str, content: bytes, kind: str) -> None:
        self.label, self.content, self.kind = label, content, kind

    def __repr__(self) -> str:
        return f"ProtocolMutation({self.label!r}, expect {self.kind})"


@st.composite
def protocol_mutations(draw) -> ProtocolMutation:
    return ProtocolMutation(*draw(_protocol_mutation()))


@st.composite
def _protocol_mutation(draw) -> tuple[str, bytes, str]:
    """(label, new file bytes, expected: 'error' exit 2 or 'close' not 0)."""
    text = BASE_PROTOCOL.read_text(encoding="utf-8")
    case = draw(st.sampled_from(["dose", "fractions", "alpha_beta", "check", "pattern",
                                 "control", "bomb", "recursive", "nesting", "python",
                                 "tab", "dup_structure", "toplevel", "bad_utf8"]))
    if case == "dose":
        v = draw(st.sampled_from(["1e400", ".nan", ".inf", "-.inf", "-40", "0", "abc",
                                  "[40]", "{a: 1}", "99999999999999999999999999"]))
        kind = "close" if v.startswith("9999") else "error"
        return f"dose_gy: {v}", _replace(text, "dose_gy: 40", f"dose_gy: {v}").encode(), kind
    if case == "fractions":
        v = draw(st.sampled_from(["0", "-1", "1e400", ".nan", "10.5", "ten", "[10]",
                                  "99999999999999999999999"]))
        kind = "close" if v.startswith("9999") else "error"
        return (f"fractions: {v}", _replace(text, "\nfractions: 10", f"\nfractions: {v}")
                .encode(), kind)
    if case == "alpha_beta":
        v = draw(st.sampled_from(["0", "-0.87", ".nan", ".inf", "1e400", "abc", "1e-300"]))
        kind = "close" if v == "1e-300" else "error"
        return (f"alpha_beta: {v}", _replace(text, "alpha_beta: 0.87", f"alpha_beta: {v}")
                .encode(), kind)
    if case == "check":
        v = draw(st.sampled_from([
            "Dmax <= nan Gy", "Dmax <= inf Gy", "Dmax <= 1e400 Gy", "Dmax <= 34 Gy Gy",
            "Dmax <=", "Dmax[EQD2, a/b=0] <= 34 Gy", "Dmax[EQD2, a/b=nan] <= 34 Gy",
            "D1e400% <= 34 Gy", "Dnan% <= 34 Gy", "D-5% <= 34 Gy", "D200% <= 34 Gy",
            "V1e400Gy <= 5 cc", "gEUD(a=0) <= 34 Gy", "gEUD(a=1e400) <= 34 Gy",
            "Dmax <= 34 Gy\\0", "Dmax <= -34 Gy", "Dmax <= 1e400% of PTV40",
            "Dmax <= 90% of NOPE"]))
        kind = "close" if v == "Dmax <= -34 Gy" else "error"
        return (f"check: {v}", _replace(text, "check: Dmax <= 34 Gy", f'check: "{v}"')
                .encode(), kind)
    if case == "pattern":
        v = draw(st.sampled_from(["(unclosed", "[z-a]", "*x", "a{4294967296}",
                                  "(?P<n>a)(?P<n>b)", "\\", "(a+)+$", "(a|a)*b",
                                  "(.*)*x", "(?<=a+)b", "\\p{L}", "a{1,99999}{1,99999}"]))
        return (f"patterns: [{v!r}]",
                _replace(text, "patterns: ['(spinal[ _-]?)?cord']",
                         "patterns: ['" + v.replace("'", "''") + "']").encode(), "error")
    if case == "control":
        ch = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\x08", "\ufffe", "\x7f"]))
        return (f"title with {ch!r}",
                _replace(text, 'title: "Bone', f'title: "Bo{ch}ne').encode(), "error")
    if case == "bad_utf8":
        raw = text.encode()
        at = raw.index(b"title:")
        return "invalid UTF-8 in the title", raw[:at + 8] + b"\xff\xfe" + raw[at + 8:], "error"
    if case == "bomb":
        if draw(st.booleans()):
            return "alias bomb (top-level keys)", (text + _bomb()).encode(), "error"
        return "alias bomb in notes", _notes(text, _flow_bomb()).encode(), "error"
    if case == "recursive":
        return "recursive alias", _notes(text, "&r [*r]").encode(), "error"
    if case == "nesting":
        n = draw(st.sampled_from([50, 500, 5000, 50000]))
        kind_ = draw(st.sampled_from(["list", "map"]))
        deep = ("[" * n + "]" * n) if kind_ == "list" else ("{a: " * n + "1" + "}" * n)
        return f"{kind_} nesting {n}", _notes(text, deep).encode(), "error"
    if case == "python":
        return ("python tag", _notes(text, f"!!python/object/apply:os.system "
                                           f"['touch {SENTINEL}']").encode(), "error")
    if case == "tab":
        return "tab indentation", _replace(text, "\n  - name: SpinalCord",
                                           "\n\t- name: SpinalCord").encode(), "error"
    if case == "dup_structure":
        start = text.index("  - name: SpinalCord")
        end = text.index("  - name: CaudaEquina")
        new = text[:end] + text[start:end] + text[end:]
        return "structure SpinalCord twice", new.encode(), "error"
    v = draw(st.sampled_from(["", "null", "- a\n- b\n", "42", "'just a string'",
                              "format_version: 1\n", "\ufeff"]))
    return f"whole file = {v!r}", v.encode(), "error"


@pytest.fixture(scope="module")
def plan_copy(tmp_path_factory) -> Path:
    return copy_plan(tmp_path_factory.mktemp("fuzzplan"))


@fuzz_settings(12)
@given(m=protocol_mutations(), fmt=st.sampled_from(["json", "junit", "text"]))
def test_hostile_protocol(plan_copy, m, fmt):
    label, content, kind = m.label, m.content, m.kind
    with tempfile.TemporaryDirectory(prefix="dvheval-fuzz-proto-") as tmp:
        proto = Path(tmp) / "fuzzed-protocol.yaml"
        proto.write_bytes(content)
        files = [proto] + sorted(plan_copy.iterdir())
        before = hashes(files)
        run = invoke(["check", str(plan_copy), "-p", str(proto), "--format", fmt],
                     timeout=60)
        info = f"{label}\n{run.describe()}"
        assert hashes(files) == before, f"input files modified\n{info}"
        assert not SENTINEL.exists(), f"a YAML tag ran a command\n{info}"
        check_run(run, fmt, [proto.name])
        if kind == "error":
            assert run.exit_code == 2, f"hostile protocol not refused with exit 2\n{info}"
            located = (re.escape(proto.name) + r":\d+", r"\b(line|byte) \d+")
            assert any(re.search(p, run.stderr) for p in located), (
                f"error not located (file:line)\n{info}")
        else:
            assert run.exit_code != 0, f"gate open with an absurd protocol\n{info}"


@fuzz_settings(3)
@given(text=hostile_text())
def test_hostile_protocol_title_is_sanitised(plan_copy, text):
    """A valid protocol whose title holds escaped control characters: exit 0, clean text."""
    esc = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    body = _replace(BASE_PROTOCOL.read_text(encoding="utf-8"), 'title: "Bone',
                    f'title: "{esc}Bone')
    with tempfile.TemporaryDirectory(prefix="dvheval-fuzz-proto-") as tmp:
        proto = Path(tmp) / "fuzzed-protocol.yaml"
        proto.write_text(body, encoding="utf-8")
        for fmt in ("text", "junit"):
            run = invoke(["check", str(plan_copy), "-p", str(proto), "--format", fmt])
            check_run(run, fmt, [proto.name])
            assert run.exit_code in (0, 2), run.describe()

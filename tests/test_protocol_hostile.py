"""Hostile protocol files: every one gives a located error, quickly, never a hang or traceback."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dvheval import protocol as proto
from dvheval.cli import app
from dvheval.protocol import (
    ProtocolError,
    load_protocol,
    match_structures,
    shipped_protocol_dir,
    validate_protocol_file,
)

SBRT = (Path(shipped_protocol_dir()) / "sbrt-1fx.yaml").read_text(encoding="utf-8")
CORD_PATTERN = "patterns: ['(spinal[ _-]?)?cord']"
BOMB = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10 if p else ['x'] * 10)}]\n"
    for p, c in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.fixture(autouse=True)
def hard_timeout():
    """Abort a test that runs longer than 30 s (a hang would otherwise stall the suite)."""

    def _expired(signum, frame):
        raise TimeoutError("protocol loading did not finish within 30 s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "hostile.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _first(tmp_path: Path, text: str | bytes) -> ProtocolError:
    """The first error of validate_protocol_file; load_protocol raises the same one."""
    path = _write(tmp_path, text)
    errors = validate_protocol_file(path)
    assert errors, "a hostile file validated"
    assert all(e.file == str(path) for e in errors)
    with pytest.raises(ProtocolError) as raised:
        load_protocol(path)
    assert raised.value.errors[0].message == errors[0].message
    return errors[0]


def _line_of(text: str, fragment: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if fragment in line)


def test_the_sbrt_base_is_valid(tmp_path):
    assert validate_protocol_file(_write(tmp_path, SBRT)) == []


# ------------------------------------------------------------------ YAML bounds
def test_alias_bomb_is_refused(tmp_path):
    e = _first(tmp_path, BOMB)  # 10^9 leaves once expanded, 1 kB on disk
    assert len(BOMB) < 1100
    assert f"more than {proto.MAX_NODES} YAML values" in e.message
    assert e.line is not None


def test_too_many_aliases_are_refused(tmp_path):
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (proto.MAX_ALIASES + 1)) + "]\n"
    e = _first(tmp_path, text)
    assert f"more than {proto.MAX_ALIASES} YAML aliases" in e.message and e.line == 2


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n",
    "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v\n",
])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, text):
    e = _first(tmp_path, text)
    assert f"nested deeper than {proto.MAX_DEPTH} levels" in e.message
    assert e.line is not None


def test_nesting_through_aliases_is_bounded(tmp_path):
    # each alias adds 40 levels to the expanded tree
    lines = ["a0: &a0 " + "[" * 40 + "x" + "]" * 40]
    lines += [f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 for i in range(1, 5)]
    e = _first(tmp_path, "\n".join(lines) + "\n")
    assert "nested deeper than" in e.message


def test_too_many_values_are_refused(tmp_path):
    e = _first(tmp_path, "a: [" + "1, " * 30000 + "1]\n")
    assert f"more than {proto.MAX_NODES} YAML values" in e.message and e.line == 1


def test_oversized_file_names_file_and_size(tmp_path):
    text = SBRT + "#" + "x" * (50 * 1024 * 1024) + "\n"
    e = _first(tmp_path, text)
    assert e.message.startswith(f"the file is too large ({len(text.encode())} bytes")
    assert str(proto.MAX_FILE_BYTES) in e.message


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\ufffe"])
def test_control_characters_are_refused_with_their_line(tmp_path, char):
    text = SBRT.replace("title:", f"ti{char}tle:", 1)
    e = _first(tmp_path, text)
    assert f"control character U+{ord(char):04X} at column 3" in e.message
    assert e.line == _line_of(SBRT, "title:")


def test_tabs_and_crlf_line_ends_are_allowed(tmp_path):
    text = SBRT.replace("\n", "\r\n").replace("# Stereotactic", "#\tStereotactic", 1)
    assert validate_protocol_file(_write(tmp_path, text)) == []


@pytest.mark.parametrize("tagged", [
    "title: !!python/object/apply:os.system ['echo owned']",
    "title: !!python/name:os.system",
    "title: !!binary aGVsbG8=",
    "title: !!set {a, b}",
    "title: !custom value",
])
def test_non_standard_yaml_tags_are_refused(tmp_path, tagged):
    text = SBRT.replace('title: "SBRT, 1 fraction, AAPM TG-101 organ limits"', tagged, 1)
    e = _first(tmp_path, text)
    assert "is not allowed in a protocol" in e.message or "not valid YAML" in e.message
    assert e.line == _line_of(text, tagged[:12])


@pytest.mark.parametrize("text, words", [
    ("- format_version: 1\n- name: x\n", "a protocol is a mapping"),
    ("just a sentence\n", "a protocol is a mapping"),
    ("42\n", "a protocol is a mapping"),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
])
def test_top_level_not_a_mapping(tmp_path, text, words):
    e = _first(tmp_path, text)
    assert words in e.message and e.line == 1


def test_duplicate_keys_are_errors(tmp_path):
    text = SBRT.replace("fractions: 1\n", "fractions: 1\nfractions: 5\n", 1)
    e = _first(tmp_path, text)
    first = _line_of(text, "fractions: 1")
    assert e.message == f"duplicate key 'fractions' (first at line {first})"
    assert e.line == first + 1 and e.field == "fractions"


def test_too_many_structures(tmp_path):
    head = SBRT.split("structures:\n")[0]
    body = "".join(f"  - name: S{i}\n    required: false\n"
                   for i in range(proto.MAX_STRUCTURES + 1))
    text = head + "structures:\n" + body
    e = _first(tmp_path, text)
    assert e.field == "structures" and e.line == _line_of(text, "structures:")
    assert f"{proto.MAX_STRUCTURES + 1} entries; at most {proto.MAX_STRUCTURES}" in e.message


def test_unicode_names_load_and_match(tmp_path):
    text = SBRT.replace("aliases: [Myelon,", "aliases: [脊髄, Μυελός, Myelon,", 1)
    p = load_protocol(_write(tmp_path, text))
    m = match_structures(p, ["脊髄", "PTV_20Gy"])
    assert m.matched["SpinalCord"].how == "alias" and m.matched["SpinalCord"].roi == "脊髄"


# ---------------------------------------------------------------- numbers
def test_400_digit_fractions_are_an_error(tmp_path):
    text = SBRT.replace("fractions: 1\n", "fractions: " + "9" * 400 + "\n", 1)
    e = _first(tmp_path, text)
    assert e.field == "fractions" and "must not exceed 100" in e.message
    assert len(e.message) < 200 and e.line == _line_of(text, "fractions: 999")


def test_5000_digit_number_is_an_error_not_a_traceback(tmp_path):
    text = SBRT.replace("fractions: 1\n", "fractions: " + "9" * 5000 + "\n", 1)
    e = _first(tmp_path, text)
    assert "cannot read the value" in e.message and e.line == _line_of(text, "fractions: 999")


@pytest.mark.parametrize("old, new, field, words", [
    ("fractions: 1\n", "fractions: 101\n", "fractions", "must not exceed 100"),
    ("fractions: 1\n", "fractions: 0\n", "fractions", "at least 1"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= 1e400 Gy"', ".check", "is not '<number> <unit>'"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= ' + "9" * 100 + ' Gy"', ".check",
     "a dose limit must lie in (0, 1000] Gy"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= 1001 Gy"', ".check", "(0, 1000] Gy"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= 0 Gy"', ".check", "(0, 1000] Gy"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= 100001 cGy"', ".check", "(0, 1000] Gy"),
    ('"D0.035cc <= 16 Gy"', '"D0.035cc <= ' + "9" * 400 + ' Gy"', ".check",
     "longer than 200 characters"),
    ("check: D95% >= 100%", "check: D95% >= 1001%", ".check", "(0, 1000] %"),
    ('"D5cc < 14 Gy"', '"D200000cc < 14 Gy"', ".check", "above 100000 cc"),
    ('"D5cc < 14 Gy"', '"V1001Gy[cc] < 14"', ".check", "above 1000 Gy"),
    ('"D5cc < 14 Gy"', '"V10Gy[cc] < 200000"', ".check", "[0, 100000] cc"),
    ('"D5cc < 14 Gy"', '"Dmax[EQD2, a/b=1000] < 14 Gy"', ".check", "a/b must lie in"),
    ('"D5cc < 14 Gy"', '"gEUD(a=-1000) < 14 Gy"', ".check", "gEUD's a"),
])
def test_implausible_numbers_are_errors(tmp_path, old, new, field, words):
    assert old in SBRT
    text = SBRT.replace(old, new, 1)
    e = _first(tmp_path, text)
    assert words in e.message and e.field.endswith(field), str(e)
    assert e.line == _line_of(text, new.strip()[:20])


def test_implausible_alpha_beta_and_prescription(tmp_path):
    text = SBRT.replace("  PTV:\n", "  PTV:\n    dose_gy: 5000\n", 1)
    e = _first(tmp_path, text)
    assert e.field == "prescriptions.PTV.dose_gy" and "above 1000 Gy" in e.message
    text = SBRT.replace(CORD_PATTERN, CORD_PATTERN + "\n    alpha_beta: 1.0e+400", 1)
    e = _first(tmp_path, text)
    assert e.field == "structures[SpinalCord].alpha_beta" and "finite number" in e.message


def test_huge_acceptable_number_is_an_error(tmp_path):
    text = SBRT.replace("        acceptable: 14 Gy\n", "        acceptable: 1.0e+400\n", 1)
    e = _first(tmp_path, text)
    assert e.field.endswith(".acceptable") and "expected a limit" in e.message


# ----------------------------------------------------------------- patterns
@pytest.mark.parametrize("pattern, words", [
    ("(a+)+$", "contains another repeat"),
    ("(a*)*b", "contains another repeat"),
    ("((ab)+)+", "contains another repeat"),
    ("(a|aa)+", "contains an alternation"),
    ("(x+x+)+y", "contains another repeat"),
    (r"(\w+\s?)*$", "contains another repeat"),
    (r"(a)\1", "backreferences"),
    ("a+b+c+d+", "more than 3 repeats"),
    ("x" * 201, "longer than 200"),
    ("(unclosed", "bad regular expression"),
])
def test_catastrophic_patterns_are_refused(tmp_path, pattern, words):
    text = SBRT.replace(CORD_PATTERN, f"patterns: ['{pattern}']", 1)
    e = _first(tmp_path, text)
    assert e.field == "structures[SpinalCord].patterns[0]" and words in e.message, str(e)
    assert e.line == _line_of(text, "patterns: ['" + pattern[:10])


def test_shipped_patterns_pass_the_static_check():
    for f in Path(shipped_protocol_dir()).glob("*.yaml"):
        for s in load_protocol(f).structures:
            for p in s.patterns:
                assert proto._pattern_problem(p.pattern) is None, (f.name, p.pattern)


def test_patterns_are_not_tried_on_names_longer_than_a_dicom_roi_name():
    p = load_protocol("sbrt-1fx")
    long_name = "spinal cord" + " x" * 30  # 71 characters
    m = match_structures(p, ["PTV_20Gy", long_name, "spinal-cord"])
    assert m.matched["SpinalCord"].roi == "spinal-cord"
    assert long_name in m.unmatched


# ---------------------------------------------------------------------- CLI
def test_cli_validate_and_check_exit_2_on_a_hostile_protocol(tmp_path):
    path = _write(tmp_path, BOMB)
    runner = CliRunner()
    res = runner.invoke(app, ["protocol", "validate", str(path)])
    assert res.exit_code == 2 and f"{path}:1: more than" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["check", "sample_dicom/sample_plan", "--protocol", str(path)])
    assert res.exit_code == 2 and "more than" in res.output and "Traceback" not in res.output

"""README.md stays true: its protocol example is valid and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from dvheval.protocol import validate_protocol_file

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_protocol_example_in_readme_is_valid(tmp_path):
    block = re.search(r"```yaml\n(format_version.*?)```", README, re.S).group(1)
    name = re.search(r"^name: (\S+)", block, re.M).group(1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(block, encoding="utf-8")
    assert validate_protocol_file(path) == []


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = commands[1].strip()
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci
    assert "dvheval dvh sample_dicom/sample_plan" in commands[0]
    assert "dvheval check sample_dicom/sample_plan -p bone-sib-30-40-10fx" in commands[0]
    assert "mypy dvheval" in test_command and "ruff check" in test_command


def test_readme_lists_every_integrity_check_with_its_severity():
    from dvheval.integrity import CHECKS

    for c in CHECKS.values():
        gate = "closes" if c.severity.value == "close" else "warns"
        assert f"| `{c.id}` | {c.compares} | {gate} |" in README, c.id

"""The vocabulary and bounds of the protocol file format.

Keys allowed at each level of a protocol, the words a constraint may use,
and the bounds that keep a hostile protocol file from hanging or crashing
the loader (see ``protocols/README.md``).
"""

from __future__ import annotations

import re

from dvheval.vocab import UNIT_INDEX as _UNIT_INDEX
from dvheval.vocab import Priority

#: The protocol file format this version reads.
FORMAT_VERSION = 1
#: Constraint priorities. ``hard`` limits gate a plan; ``objective`` ones are planning aims.
PRIORITIES: tuple[Priority, ...] = (Priority.HARD, Priority.OBJECTIVE)
#: Comparison operators of a constraint.
OPERATORS = ("<=", "<", ">=", ">")
#: Structure types (informative only).
STRUCTURE_TYPES = ("target", "oar", "other")
#: Report-only pseudo-metric: the structure's volume in cm^3.
VOLUME = "Volume"

# Bounds that keep a hostile protocol file from hanging or crashing the loader.
#: Largest protocol file, in bytes (the shipped ones are below 20 kB).
MAX_FILE_BYTES = 1_000_000
#: Deepest nesting of YAML mappings and lists (the format needs 5).
MAX_DEPTH = 50
#: Most YAML aliases (``*name``) in one file.
MAX_ALIASES = 100
#: Most YAML nodes, as written and once aliases are expanded (stops "billion
#: laughs" files; the largest shipped protocol has about 1 500).
MAX_NODES = 20_000
#: Most structures, and most items of any other list or mapping of the format.
MAX_STRUCTURES = 500
MAX_ITEMS = 200
#: Longest check, limit or report-metric text, in characters.
MAX_EXPRESSION = 200
#: Longest regular expression in ``patterns``, and most repeats in one.
MAX_PATTERN_LENGTH = 200
MAX_PATTERN_REPEATS = 3
#: Patterns are only tried on ROI names up to this length (DICOM LO, 64 characters).
MAX_ROI_NAME = 64
#: Plausible ranges of numbers. Doses (limits, prescriptions) lie in (0, 1000] Gy,
#: percentages of a prescription in (0, 1000] %, volumes in [0, 100000] cc.
MAX_DOSE_GY = 1000.0
MAX_PERCENT_RX = 1000.0
MAX_VOLUME_CC = 100_000.0
#: Fractions lie in 1..100, alpha/beta in (0, 100] Gy, gEUD's a in [-100, 100].
MAX_FRACTIONS = 100
MAX_ALPHA_BETA = 100.0
MAX_GEUD_A = 100.0

# Keys allowed at each level: name -> required?
TOP_KEYS = {
    "format_version": True,
    "name": True,
    "title": True,
    "version": True,
    "date": True,
    "description": False,
    "sources": True,
    "checked_against": False,
    "fractions": True,
    "prescriptions": True,
    "conditions": False,
    "structures": True,
    "alternatives": False,
    "derived": False,
    "notes": False,
}
SOURCE_KEYS = {"short": True, "reference": True, "doi": False, "url": False, "note": False}
PRESCRIPTION_KEYS = {"dose_gy": False, "aliases": False, "description": False}
STRUCTURE_KEYS = {
    "name": True,
    "aliases": False,
    "patterns": False,
    "required": False,
    "type": False,
    "prescription": False,
    "alpha_beta": False,
    "description": False,
    "constraints": False,
    "report": False,
}
CONSTRAINT_KEYS = {
    "check": True,
    "id": False,
    "priority": False,
    "acceptable": False,
    "unacceptable": False,
    "source": True,
    "detail": False,
    "checked_against": False,
    "note": False,
    "prescription": False,
}
ALTERNATIVE_KEYS = {
    "id": True,
    "description": True,
    "when": True,
    "replaces": False,
    "makes_optional": False,
    "constraints": False,
    "source": False,
}
WHEN_KEYS = {"present": False, "condition": False}

#: A protocol's ``name``: lower-case letters, digits, '.', '_' and '-'.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: Keys of sources and conditions, and constraint ids.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")

#: Units a compared value can have: dose in Gy, volume in cm^3, volume in per
#: cent of the structure, dose in per cent of a prescription.
UNIT_GY, UNIT_CC, UNIT_PCT, UNIT_PCT_RX = "Gy", "cc", "%", "%Rx"
#: The limit of a dimensionless quality index (PaddickCI >= 0.7) has no unit.
UNIT_INDEX = _UNIT_INDEX
#: The highest limit a quality index may be given.
MAX_INDEX = 1000.0

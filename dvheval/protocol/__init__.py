"""Clinical protocols: prescriptions, structures and dose-volume constraints.

A protocol is a YAML file (see ``protocols/README.md`` for the full format and
``dvheval/schemas/protocol.schema.json`` for its JSON Schema)::

    format_version: 1
    name: bone-sib-30-40-10fx          # lower case, the file's stem
    title: Bone metastases, SIB 30/40 Gy in 10 fractions
    version: "1.0"
    date: "2025-01-01"
    sources:                           # every limit cites one of these
      quantec-cord:
        short: QUANTEC spinal cord (Kirkpatrick 2010)
        reference: Kirkpatrick JP et al. Int J Radiat Oncol Biol Phys 2010;76:S42-S49.
    fractions: 10
    prescriptions:                     # named dose levels
      PTV30: {dose_gy: 30, aliases: [PTV_3000]}
    structures:
      - name: SpinalCord               # TG-263 name
        aliases: [Myelon, SC, cord]    # compared case-insensitively, ' ' = '_' = '-'
        patterns: ['(spinal[ _-]?)?cord']   # Python regex, full match, ignoring case
        alpha_beta: 0.87               # for [EQD2] / [BED] metrics without a/b
        constraints:
          - id: cord-dmax
            check: Dmax <= 34 Gy       # <metric> <operator> <limit>
            acceptable: 35 Gy          # optional second limit: ACCEPTABLE verdict
            priority: hard             # or objective
            source: quantec-cord
        report: [Dmax, D2%, D0.5cc, "Dmax[EQD2]"]

Constraint strings are parsed strictly: a TG-263 metric as understood by
:func:`dvheval.engine.metrics.parse_metric`, one of ``<=``, ``<``, ``>=``, ``>``,
and a limit with its unit: ``34 Gy``, ``3400 cGy``, ``0.35 cc``, ``32 %``, or
a percentage of a prescription level, ``90% of PTV30`` (``107%`` alone refers
to the structure's default prescription). The unit may be left out only when
the metric names its output unit in brackets (``V20Gy[%] < 32``).

Loading reports every problem with its file, line and field. Hostile input is
refused with a located error rather than a hang: files are capped in size,
YAML nesting, aliases and expanded nodes are bounded, numbers must be finite
and plausible, and ``patterns`` must not be able to backtrack catastrophically
(see :data:`MAX_FILE_BYTES` and the constants next to it).

The package is split by concern; every name below is importable from
``dvheval.protocol`` itself:

* :mod:`~dvheval.protocol.schema`: keys of the format, bounds, units;
* :mod:`~dvheval.protocol.model`: the dataclasses of a loaded protocol;
* :mod:`~dvheval.protocol.problems`: :class:`ProtocolError`;
* :mod:`~dvheval.protocol.yaml_lines`: the bounded YAML loader with line numbers;
* :mod:`~dvheval.protocol.expressions`: checks, metrics and limits;
* :mod:`~dvheval.protocol.patterns`: refusing patterns that can backtrack badly;
* :mod:`~dvheval.protocol.fields`, :mod:`~dvheval.protocol.constraints`,
  :mod:`~dvheval.protocol.reader`: validating a document into the model;
* :mod:`~dvheval.protocol.files`, :mod:`~dvheval.protocol.library`: reading
  files, the shipped protocols, :func:`load_protocol`;
* :mod:`~dvheval.protocol.matching`: plan ROI names to protocol structures.
"""

from __future__ import annotations

from dvheval.engine.metrics import Metric, parse_metric
from dvheval.errors import MetricError
from dvheval.protocol.files import validate_protocol_file
from dvheval.protocol.library import list_protocols, load_protocol, shipped_protocol_dir
from dvheval.protocol.matching import RoiMatch, StructureMatch, match_structures
from dvheval.protocol.model import (
    Alternative,
    Constraint,
    Limit,
    PrescriptionLevel,
    Protocol,
    ProtocolSummary,
    Source,
    StructureSpec,
    normalize_name,
)
from dvheval.protocol.patterns import (  # the tests check the shipped patterns with it
    _pattern_problem as _pattern_problem,
)
from dvheval.protocol.problems import ProtocolError
from dvheval.protocol.schema import (
    ALTERNATIVE_KEYS,
    CONSTRAINT_KEYS,
    FORMAT_VERSION,
    MAX_ALIASES,
    MAX_ALPHA_BETA,
    MAX_DEPTH,
    MAX_DOSE_GY,
    MAX_EXPRESSION,
    MAX_FILE_BYTES,
    MAX_FRACTIONS,
    MAX_GEUD_A,
    MAX_ITEMS,
    MAX_NODES,
    MAX_PATTERN_LENGTH,
    MAX_PATTERN_REPEATS,
    MAX_PERCENT_RX,
    MAX_ROI_NAME,
    MAX_STRUCTURES,
    MAX_VOLUME_CC,
    OPERATORS,
    PRESCRIPTION_KEYS,
    PRIORITIES,
    SOURCE_KEYS,
    STRUCTURE_KEYS,
    STRUCTURE_TYPES,
    TOP_KEYS,
    UNIT_CC,
    UNIT_GY,
    UNIT_INDEX,
    UNIT_PCT,
    UNIT_PCT_RX,
    VOLUME,
    WHEN_KEYS,
)

__all__ = [
    "ALTERNATIVE_KEYS",
    "CONSTRAINT_KEYS",
    "FORMAT_VERSION",
    "MAX_ALIASES",
    "MAX_ALPHA_BETA",
    "MAX_DEPTH",
    "MAX_DOSE_GY",
    "MAX_EXPRESSION",
    "MAX_FILE_BYTES",
    "MAX_FRACTIONS",
    "MAX_GEUD_A",
    "MAX_ITEMS",
    "MAX_NODES",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_REPEATS",
    "MAX_PERCENT_RX",
    "MAX_ROI_NAME",
    "MAX_STRUCTURES",
    "MAX_VOLUME_CC",
    "OPERATORS",
    "PRESCRIPTION_KEYS",
    "PRIORITIES",
    "SOURCE_KEYS",
    "STRUCTURE_KEYS",
    "STRUCTURE_TYPES",
    "TOP_KEYS",
    "UNIT_CC",
    "UNIT_GY",
    "UNIT_INDEX",
    "UNIT_PCT",
    "UNIT_PCT_RX",
    "VOLUME",
    "WHEN_KEYS",
    "Alternative",
    "Constraint",
    "Limit",
    "Metric",
    "MetricError",
    "PrescriptionLevel",
    "Protocol",
    "ProtocolError",
    "ProtocolSummary",
    "RoiMatch",
    "Source",
    "StructureMatch",
    "StructureSpec",
    "list_protocols",
    "load_protocol",
    "match_structures",
    "normalize_name",
    "parse_metric",
    "shipped_protocol_dir",
    "validate_protocol_file",
]

"""Validating a parsed protocol document into a :class:`~dvheval.protocol.model.Protocol`.

The reader walks the document once, section by section, and records every
problem with its line and field (see :class:`~dvheval.protocol.fields._Fields`);
a protocol is built only when there is none. The order in which problems are
found is the order in which they are reported, and the first one is the
message of the error :func:`~dvheval.protocol.load_protocol` raises.
"""

from __future__ import annotations

import re
from typing import Any

from dvheval.protocol.constraints import _ConstraintReader
from dvheval.protocol.fields import _Ctx, _join
from dvheval.protocol.model import (
    Alternative,
    Constraint,
    PrescriptionLevel,
    Protocol,
    Source,
    StructureSpec,
    normalize_name,
)
from dvheval.protocol.patterns import _pattern_problem
from dvheval.protocol.problems import _hint, _short
from dvheval.protocol.schema import (
    _ID_RE,
    _NAME_RE,
    ALTERNATIVE_KEYS,
    FORMAT_VERSION,
    MAX_ALPHA_BETA,
    MAX_DOSE_GY,
    MAX_FRACTIONS,
    MAX_ROI_NAME,
    PRESCRIPTION_KEYS,
    SOURCE_KEYS,
    STRUCTURE_KEYS,
    STRUCTURE_TYPES,
    TOP_KEYS,
    WHEN_KEYS,
)
from dvheval.protocol.yaml_lines import _Map, _Seq

#: Normalised structure name or alias -> (structure, line, whether it is the name).
_Names = dict[str, tuple[str, int, bool]]
#: ``replaces`` of an alternative, checked once every constraint id is known.
_Replaced = list[tuple[int, str, tuple[str, ...]]]


class _Reader(_ConstraintReader):
    """Turns parsed YAML into a :class:`Protocol`, collecting located errors."""

    # -- top level
    def build(self, root: Any, sha256: str) -> Protocol | None:
        """The protocol of the document ``root``; None when :attr:`errors` has any."""
        if not isinstance(root, _Map):
            self.error(getattr(root, "line", 1), None,
                       "a protocol is a mapping of keys (format_version, name, ...)")
            return None
        self.keys(root, "", TOP_KEYS)
        name, title, version, date = self.read_identity(root)
        fractions = self.read_fractions(root)
        self.read_sources(self.get(root, "sources", "", "map"))
        self.read_prescriptions(self.get(root, "prescriptions", "", "map"))
        conditions = self.read_conditions(self.get(root, "conditions", "", "map"))
        structures = self.read_structures(self.get(root, "structures", "", "list"))
        alternatives = self.read_alternatives(
            self.get(root, "alternatives", "", "list"), structures, conditions
        )
        derived = self.read_derived(self.get(root, "derived", "", "map"))
        notes = self.get(root, "notes", "", "strs", ())
        description = self.get(root, "description", "", "str")
        checked_against = self.get(root, "checked_against", "", "str")
        if self.errors:
            return None
        return Protocol(
            name=name,
            title=title,
            version=version,
            date=date,
            fractions=fractions,
            prescriptions=dict(self.levels),
            structures=tuple(structures),
            sources=dict(self.sources),
            alternatives=tuple(alternatives),
            conditions=conditions,
            description=description,
            checked_against=checked_against,
            notes=notes,
            file=self.file,
            sha256=sha256,
            derived=derived,
        )

    def read_identity(self, root: _Map) -> tuple[str, str, str, str]:
        """Name, title, version and date (``format_version`` checked first)."""
        fv = root.get("format_version")
        if "format_version" in root and fv != FORMAT_VERSION:
            self.error(self.key_line(root, "format_version"), "format_version",
                       f"this dvheval reads format_version {FORMAT_VERSION}, not {fv!r}")
        name = self.get(root, "name", "", "str", "")
        if name and not _NAME_RE.match(name):
            self.error(self.key_line(root, "name"), "name",
                       f"{name!r}: use lower-case letters, digits, '.', '_' and '-'")
        title = self.get(root, "title", "", "str", "")
        version = self.get(root, "version", "", "text", "")
        date = self.get(root, "date", "", "text", "")
        if date and not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
            self.error(self.key_line(root, "date"), "date", f"{date!r} is not YYYY-MM-DD")
        return name, title, version, date

    def read_fractions(self, root: _Map) -> int:
        """Number of fractions, 0 when missing or out of range."""
        fractions: int = self.get(root, "fractions", "", "int", 0)
        given = root.get("fractions")
        if isinstance(given, int) and not isinstance(given, bool) and not (
            1 <= given <= MAX_FRACTIONS
        ):
            what = "be at least 1" if given < 1 else f"not exceed {MAX_FRACTIONS}"
            self.error(self.key_line(root, "fractions"), "fractions",
                       f"the number of fractions must {what}, got {_short(fractions)}")
            fractions = 0
        return fractions

    def read_derived(self, m: _Map | None) -> dict[str, str]:
        """``derived:``: name -> structure expression (see :mod:`dvheval.engine.derive`)."""
        from dvheval.engine.derive import DerivationError, parse_expression

        out: dict[str, str] = {}
        if m is None:
            return out
        seen: dict[str, str] = {}
        for key, v in m.items():
            path = f"derived.{key}"
            line = m.key_lines[key]
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_ROI_NAME:
                self.error(line, path, f"a derived structure name is 1-{MAX_ROI_NAME} "
                           "characters")
                continue
            if key.strip().lower() in seen:
                self.error(line, path, f"{key!r} is derived twice (also as "
                           f"{seen[key.strip().lower()]!r})")
                continue
            if not (isinstance(v, str) and v.strip()):
                self.error(line, path, "expected an expression such as 'Kidney_L | Kidney_R'")
                continue
            try:
                parse_expression(v, key)
            except DerivationError as exc:
                where = "" if exc.position is None else f" at character {exc.position + 1}"
                self.error(line, path, f"{exc.message}{where} of {_short(v)}")
                continue
            seen[key.strip().lower()] = key
            out[key] = v.strip()
        return out

    def read_sources(self, m: _Map | None) -> None:
        """``sources:`` into :attr:`sources`."""
        if m is None:
            return
        if not m:
            self.error(m.line, "sources", "list at least one source")
        for key, v in m.items():
            path = f"sources.{key}"
            if not _ID_RE.match(key):
                self.error(m.key_lines[key], path, f"source key {key!r}: use letters, digits, "
                           "'_', '.', ':' and '-'")
            if not isinstance(v, _Map):
                self.error(m.key_lines[key], path, "expected a mapping with short and reference")
                continue
            self.keys(v, path, SOURCE_KEYS)
            self.sources[key] = Source(
                key=key,
                short=self.get(v, "short", path, "str", key),
                reference=self.get(v, "reference", path, "str", ""),
                doi=self.get(v, "doi", path, "text"),
                url=self.get(v, "url", path, "str"),
                note=self.get(v, "note", path, "str"),
            )

    def read_prescriptions(self, m: _Map | None) -> None:
        """``prescriptions:`` into :attr:`levels`."""
        if m is None:
            return
        if not m:
            self.error(m.line, "prescriptions", "define at least one prescription level")
        seen: dict[str, str] = {}
        for key, v in m.items():
            path = f"prescriptions.{key}"
            line = m.key_lines[key]
            if not isinstance(v, _Map):
                self.error(line, path, "expected a mapping, e.g. {dose_gy: 30}")
                continue
            self.keys(v, path, PRESCRIPTION_KEYS)
            dose = self.read_dose(v, path)
            aliases = self.get(v, "aliases", path, "strs", ())
            for n in (key, *aliases):
                k = normalize_name(n)
                if k in seen and seen[k] != key:
                    self.error(line, path, f"{n!r} also names prescription level {seen[k]!r}")
                seen[k] = key
            self.levels[key] = PrescriptionLevel(
                key, dose, aliases, self.get(v, "description", path, "str")
            )

    def read_dose(self, v: _Map, path: str) -> float | None:
        """``dose_gy`` of a prescription level; None for "from the plan" or when invalid."""
        if v.get("dose_gy") is None:
            return None
        dose: float | None = self.get(v, "dose_gy", path, "number")
        if dose is not None and dose <= 0:
            self.error(self.key_line(v, "dose_gy"), f"{path}.dose_gy",
                       f"a prescription dose must be positive, got {dose:g}")
        elif dose is not None and dose > MAX_DOSE_GY:
            self.error(self.key_line(v, "dose_gy"), f"{path}.dose_gy",
                       f"a prescription dose above {MAX_DOSE_GY:g} Gy is not plausible, "
                       f"got {dose:g}")
            dose = None
        return dose

    def read_conditions(self, m: _Map | None) -> dict[str, str]:
        """``conditions:``: name -> description in words."""
        out: dict[str, str] = {}
        if m is None:
            return out
        for key, v in m.items():
            if not _ID_RE.match(key):
                self.error(m.key_lines[key], f"conditions.{key}", f"condition name {key!r}: "
                           "use letters, digits, '_', '.', ':' and '-'")
            if not (isinstance(v, str) and v.strip()):
                self.error(m.key_lines[key], f"conditions.{key}",
                           "describe the condition in words")
                continue
            out[key] = v.strip()
        return out

    # -- structures
    def read_structures(self, seq: _Seq | None) -> list[StructureSpec]:
        """``structures:``, in order; names and aliases are unique across them."""
        out: list[StructureSpec] = []
        if seq is None:
            return out
        if not seq:
            self.error(seq.line, "structures", "list at least one structure")
        names: _Names = {}
        for i, item in enumerate(seq):
            got = self.read_structure(item, i, seq.item_lines[i], names)
            if got is not None:
                out.append(got)
        return out

    def read_structure(self, item: Any, i: int, line: int, names: _Names
                       ) -> StructureSpec | None:
        """Structure ``i`` of the list (at ``line``), its constraints and reports."""
        if not isinstance(item, _Map):
            self.error(line, f"structures[{i}]", "expected a mapping with at least 'name'")
            return None
        label = item.get("name") if isinstance(item.get("name"), str) else str(i)
        path = f"structures[{label}]"
        self.keys(item, path, STRUCTURE_KEYS)
        name = self.get(item, "name", path, "str")
        if name is None:
            return None
        aliases = self.get(item, "aliases", path, "strs", ())
        self.register_names(item, path, name, aliases, names)
        patterns = self.read_patterns(item, path)
        stype = self.get(item, "type", path, "str")
        if stype is not None and stype not in STRUCTURE_TYPES:
            self.error(self.key_line(item, "type"), f"{path}.type",
                       f"type {stype!r} is not one of {', '.join(STRUCTURE_TYPES)}")
        ab = self.read_alpha_beta(item, path)
        rx = self.get(item, "prescription", path, "str")
        if rx is not None:
            rx = self.level_ref(rx, self.key_line(item, "prescription"), f"{path}.prescription")
        elif len(self.levels) == 1:
            rx = next(iter(self.levels))
        constraints = self.structure_constraints(item, path, _Ctx(name, ab, rx))
        return StructureSpec(
            name=name,
            aliases=aliases,
            patterns=tuple(patterns),
            required=self.get(item, "required", path, "bool", True),
            type=stype,
            prescription=rx,
            alpha_beta=ab,
            description=self.get(item, "description", path, "str"),
            constraints=tuple(constraints),
            line=line,
        )

    def register_names(self, item: _Map, path: str, name: str, aliases: tuple[str, ...],
                       names: _Names) -> None:
        """Record the structure's name and aliases in ``names``; clashes are errors."""
        for n, is_name in ((name, True), *((a, False) for a in aliases)):
            k = normalize_name(n)
            key = "name" if is_name else "aliases"
            where = self.key_line(item, key)
            if k not in names:
                names[k] = (name, where, is_name)
            elif is_name and names[k][2]:
                self.error(where, _join(path, key),
                           f"duplicate structure {name!r} (line {names[k][1]})")
            elif names[k][0] != name:
                self.error(where, _join(path, key),
                           f"{n!r} also names structure {names[k][0]!r} (line {names[k][1]})")

    def read_patterns(self, item: _Map, path: str) -> list[re.Pattern[str]]:
        """The structure's ``patterns``, compiled; unsafe ones are errors."""
        patterns = []
        for j, p in enumerate(self.get(item, "patterns", path, "strs", ())):
            problem = _pattern_problem(p)
            if problem is None:
                patterns.append(re.compile(p, re.IGNORECASE))
            else:
                self.error(self.key_line(item, "patterns"), f"{path}.patterns[{j}]",
                           f"pattern {_short(p)} refused: {problem}")
        return patterns

    def read_alpha_beta(self, item: _Map, path: str) -> float | None:
        """The structure's ``alpha_beta`` in Gy; None when missing or out of range."""
        ab: float | None = self.get(item, "alpha_beta", path, "number")
        if ab is not None and not 0 < ab <= MAX_ALPHA_BETA:
            what = "be positive" if ab <= 0 else f"not exceed {MAX_ALPHA_BETA:g} Gy"
            self.error(self.key_line(item, "alpha_beta"), f"{path}.alpha_beta",
                       f"alpha/beta must {what}, got {ab:g}")
            ab = None
        return ab

    def structure_constraints(self, item: _Map, path: str, ctx: _Ctx) -> list[Constraint]:
        """The structure's ``constraints`` followed by its ``report`` metrics."""
        constraints = []
        for j, c in enumerate(self.get(item, "constraints", path, "list", ())):
            got = self.read_constraint(
                c, item["constraints"].item_lines[j], f"{path}.constraints[{j}]", ctx, None
            )
            if got is not None:
                constraints.append(got)
        report = self.get(item, "report", path, "list", ())
        for j, r in enumerate(report):
            got = self.read_report(r, report.item_lines[j], f"{path}.report[{j}]", ctx)
            if got is not None:
                constraints.append(got)
        return constraints

    # -- alternatives
    def read_alternatives(
        self, seq: _Seq | None, structures: list[StructureSpec], conditions: dict[str, str]
    ) -> list[Alternative]:
        """``alternatives:``; ``replaces`` is checked once every constraint id is known."""
        out: list[Alternative] = []
        if seq is None:
            return out
        by_name = {s.name: s for s in structures}
        replaced: _Replaced = []
        for i, item in enumerate(seq):
            got = self.read_alternative(item, i, seq.item_lines[i], by_name, conditions,
                                        replaced)
            if got is not None:
                out.append(got)
        for line, path, ids in replaced:
            for cid in ids:
                if cid not in self.ids:
                    self.error(line, path, f"no constraint has id {cid!r}{_hint(cid, self.ids)}")
        return out

    def read_alternative(
        self, item: Any, i: int, line: int, by_name: dict[str, StructureSpec],
        conditions: dict[str, str], replaced: _Replaced,
    ) -> Alternative | None:
        """Alternative ``i`` of the list (at ``line``); its ``replaces`` go to ``replaced``."""
        if not isinstance(item, _Map):
            self.error(line, f"alternatives[{i}]", "expected a mapping with id, when, ...")
            return None
        label = item.get("id") if isinstance(item.get("id"), str) else str(i)
        path = f"alternatives[{label}]"
        self.keys(item, path, ALTERNATIVE_KEYS)
        aid = self.get(item, "id", path, "str")
        if aid is None:
            return None
        present, condition = self.read_when(item, path, by_name, conditions)
        replaces = self.get(item, "replaces", path, "strs", ())
        replaced.append((self.key_line(item, "replaces"), f"{path}.replaces", replaces))
        optional = self.get(item, "makes_optional", path, "strs", ())
        self.structure_refs(optional, by_name, self.key_line(item, "makes_optional"),
                            f"{path}.makes_optional")
        sources = self.get(item, "source", path, "strs", ())
        self.source_refs(sources, self.key_line(item, "source"), f"{path}.source")
        constraints = self.alternative_constraints(item, path, aid, by_name)
        return Alternative(
            id=aid,
            description=self.get(item, "description", path, "str", ""),
            present=present,
            condition=condition,
            replaces=replaces,
            makes_optional=optional,
            constraints=tuple(constraints),
            citation=self.citation(sources, None),
            line=line,
        )

    def read_when(
        self, item: _Map, path: str, by_name: dict[str, StructureSpec],
        conditions: dict[str, str],
    ) -> tuple[tuple[str, ...], str | None]:
        """``when:`` of an alternative: structures that must be present, and condition."""
        present: tuple[str, ...] = ()
        condition = None
        when = self.get(item, "when", path, "map")
        if when is None:
            return present, condition
        wpath = f"{path}.when"
        self.keys(when, wpath, WHEN_KEYS)
        present = self.get(when, "present", wpath, "strs", ())
        self.structure_refs(present, by_name, self.key_line(when, "present"),
                            f"{wpath}.present")
        condition = self.get(when, "condition", wpath, "str")
        if condition is not None and condition not in conditions:
            self.error(self.key_line(when, "condition"), f"{wpath}.condition",
                       f"undeclared condition {condition!r}; declare it under conditions")
        if not present and condition is None:
            self.error(when.line, wpath, "give 'present' and/or 'condition'")
        return present, condition

    def alternative_constraints(
        self, item: _Map, path: str, aid: str, by_name: dict[str, StructureSpec]
    ) -> list[Constraint]:
        """Constraints an alternative brings in; each names its ``structure``."""
        constraints = []
        cseq = self.get(item, "constraints", path, "list", ())
        for j, c in enumerate(cseq):
            cpath, cline = f"{path}.constraints[{j}]", cseq.item_lines[j]
            sname = c.get("structure") if isinstance(c, _Map) else None
            spec = by_name.get(sname) if isinstance(sname, str) else None
            if isinstance(c, _Map) and spec is None:
                if "structure" in c:
                    self.error(self.key_line(c, "structure"), f"{cpath}.structure",
                               f"unknown structure {sname!r}{_hint(str(sname), by_name)}")
                else:
                    self.error(c.line, cpath, "missing required key 'structure'")
                continue
            ctx = _Ctx(spec.name, spec.alpha_beta, spec.prescription) if spec else None
            got = self.read_constraint(c, cline, cpath, ctx, aid)
            if got is not None:
                constraints.append(got)
        return constraints

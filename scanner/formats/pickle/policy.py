"""Decide what an imported pickle global is: allowed, denied (with severity) or unknown.

Tables come from rules/pickle-globals.toml (compiled once per RuleSet) and the user's policy."""

from __future__ import annotations

import _compat_pickle
import json
import re
from pathlib import Path
from typing import Any

from scanner.findings import Severity
from scanner.record import record
from scanner.rules import Policy, RuleSet, rules_dir


@record(frozen=True)
class DenyRule:
    name: str
    severity: Severity
    reason: str
    reference: str | None = None
    rule: str = "PICKLE-DANGEROUS-CALL"  # construct-only entries whose __init__ is undecided: PICKLE-UNKNOWN-GLOBAL


@record(frozen=True)
class Nested:
    name: str
    payload: str          # pickle | auto | marshal | python | text
    severity: Severity    # severity of the call when its payload was constant and scanned


@record(frozen=True)
class Tables:
    allow: frozenset[str]
    deny: dict[str, DenyRule]
    nested: dict[str, Nested]
    decoders: dict[str, str]
    call_through: dict[str, tuple[int, ...]]
    getattr_like: frozenset[str]
    import_like: frozenset[str]
    module_name_like: frozenset[str]
    aliases: dict[str, str]
    walk_dunders: frozenset[str]
    # allowed names whose __init__ is unsafe: fine as the class of NEWOBJ / copyreg.__newobj__, not called
    construct_only: dict[str, DenyRule]
    # call-through arguments that only get cls.__new__(cls) (no __init__): {callable: indices}
    new_only: dict[str, frozenset[int]]
    # (callee prefix, pattern, rule): a constant string argument matching pattern makes an allowed call unsafe
    string_args: tuple[tuple[str, re.Pattern[str], DenyRule], ...] = ()
    # denied callables judged by their target: {name: argument index of the target} (functools.partial)
    by_target: dict[str, int] | None = None
    # {producer: methods}: getattr(<producer(...)>, method) reaches a known method of a known type
    typed_methods: dict[str, frozenset[str]] | None = None
    # {callable: argument index of a codec name}: codecs.lookup imports encodings.<name> for unknown names
    codec_calls: dict[str, int] | None = None
    # codec names (normalized as encodings.normalize_encoding + lower) that resolve without a new import
    codec_names: frozenset[str] = frozenset()
    # {class: (state keys, reason, reference)}: reconstruction reaches a sink only through a __setstate__
    # branch taken when BUILD's state holds one of those keys
    state_guards: dict[str, tuple[frozenset[str], str, str | None]] | None = None


@record(frozen=True)
class Decision:
    status: str                 # allow | deny | unknown
    name: str                   # the dotted name that was looked up (after Python-2 mapping)
    severity: Severity = Severity.HIGH
    reason: str = ""
    reference: str | None = None
    undecided: bool = False     # a generated policy could not decide it (no path to a sink found either)


def tables(rules: RuleSet) -> Tables:
    return rules.cached("pickle-globals", lambda: _build(rules.doc("pickle-globals")))


def _build(doc: dict[str, Any]) -> Tables:
    allow: set[str] = set()
    for group in doc.get("allow", []):
        allow.update(group["names"])
    deny: dict[str, DenyRule] = {}
    for group in doc.get("deny", []):
        sev = Severity.parse(group["severity"])
        for name in group["names"]:
            deny[name] = DenyRule(name, sev, group["reason"], group.get("reference"))
    nested = {e["name"]: Nested(e["name"], e["payload"], Severity.parse(e["severity"]))
              for e in doc.get("nested", [])}
    decoders = {e["name"]: e["codec"] for e in doc.get("decoder", [])}
    through = {e["name"]: tuple(e["callees"]) for e in doc.get("call_through", [])}
    new_only = {e["name"]: frozenset(e["new_only"]) for e in doc.get("call_through", []) if e.get("new_only")}
    construct_only: dict[str, DenyRule] = {}
    for group in doc.get("construct_only", []):
        sev = Severity.parse(group["severity"])
        for name in group["names"]:
            construct_only[name] = DenyRule(name, sev, group["reason"], group.get("reference"))
    string_args = tuple((e["callee_prefix"], re.compile(e["pattern"]),
                         DenyRule(e["callee_prefix"], Severity.parse(e["severity"]), e["reason"], e.get("reference")))
                        for e in doc.get("string_args", []))
    res = doc.get("resolvers", {})
    by_target = {e["name"]: int(e["target"]) for e in doc.get("by_target", [])}
    typed: dict[str, frozenset[str]] = {}
    for e in doc.get("typed_methods", []):
        for producer in e["producers"]:
            typed[producer] = typed.get(producer, frozenset()) | frozenset(e["methods"])
    codecs = doc.get("codec_lookup", {})
    guards = {name: (frozenset(e["keys"]), e["reason"], e.get("reference"))
              for e in doc.get("state_guard", []) for name in e["names"]}
    return Tables(frozenset(allow), deny, nested, decoders, through, frozenset(res.get("getattr", [])),
                  frozenset(res.get("import", [])), frozenset(res.get("module_name", [])),
                  dict(doc.get("aliases", {})),
                  frozenset(doc.get("walk", {}).get("dunders", [])), construct_only, new_only, string_args,
                  by_target, typed, {k: int(v) for k, v in codecs.get("calls", {}).items()},
                  frozenset(codecs.get("names", [])), guards)


class Generated:
    """Class policies generated from library source (tools/gen_class_policies.py): one JSON file per
    distribution under rules/generated/class-policies, read only when a name of one of its top-level
    modules is looked up and is on no hand list."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._index: dict[str, Any] | None = None
        self._libs: dict[str, dict[str, Any]] = {}

    def _load(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / name).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def covers(self, top: str) -> bool:
        """A top-level module some analysed library provides."""
        if self._index is None:
            self._index = self._load("index.json")
        return top in self._index.get("modules", {})

    def lookup(self, full: str) -> tuple[str, str, str] | None:
        """(code, reason, library label) for a generated name: code C<construct><call> or F<call>."""
        if self._index is None:
            self._index = self._load("index.json")
        for dist in self._index.get("modules", {}).get(full.split(".")[0], ()):
            lib = self._libs.get(dist)
            if lib is None:
                info = self._index.get("libraries", {}).get(dist, {})
                lib = self._libs[dist] = self._load(str(info.get("file", f"{dist}.json")))
            code = lib.get("names", {}).get(full)
            if code:
                versions = lib.get("ranges", {}).get(full) or lib.get("versions") or ["?"]
                label = f"{dist} {versions[0]}" + (f"..{versions[-1]}" if versions[-1] != versions[0] else "")
                return code, lib.get("why", {}).get(full, ""), label
        return None


def generated(rules: RuleSet) -> Generated:
    base = getattr(rules, "directory", None) or rules_dir()
    return rules.cached("class-policies", lambda: Generated(base / "generated" / "class-policies"))


def map_py2(module: str, name: str, proto: int) -> tuple[str, str]:
    """The renaming `pickle.Unpickler.find_class` applies for protocol < 3 (fix_imports=True)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


class Classifier:
    """Looks names up against the rule tables plus the user's allow / deny additions."""

    def __init__(self, rules: RuleSet, policy: Policy) -> None:
        self._rules = rules
        self._t: Tables | None = None
        self.user_allow_exact = frozenset(p for p in policy.allow_globals if not p.endswith(".*"))
        self.user_allow_prefix = tuple(p[:-1] for p in policy.allow_globals if p.endswith(".*"))
        self.user_deny = {d.name: DenyRule(d.name, d.severity, d.reason, d.reference) for d in policy.deny_globals}
        self._memo: dict[str, Decision] = {}
        self._widths: dict[int, int] = {}
        # generated classes whose reconstruction is safe but whose __init__ is not: {name: rule}
        self._construct_only: dict[str, DenyRule] = {}

    def construct_only(self, name: str) -> DenyRule | None:
        """Why calling an allowed class (REDUCE / INST / OBJ) is unsafe when only cls.__new__ is safe."""
        return self.t.construct_only.get(name) or self._construct_only.get(name)

    @property
    def t(self) -> Tables:
        # built on the first global: a pickle that imports nothing never parses the globals tables
        if self._t is None:
            self._t = tables(self._rules)
        return self._t

    def classify(self, full: str) -> Decision:
        hit = self._memo.get(full)
        if hit is None:
            hit = self._memo[full] = self._classify(full)
        return hit

    def _classify(self, full: str) -> Decision:
        deny = self._deny(full, self.user_deny)
        if deny is not None:
            return Decision("deny", full, deny.severity, deny.reason, deny.reference)
        if full in self.user_allow_exact or full.startswith(self.user_allow_prefix) and self.user_allow_prefix:
            return Decision("allow", full, Severity.INFO, "allowed by user configuration")
        if full in self.t.allow:
            return Decision("allow", full, Severity.INFO, "on the allow list")
        deny = self._deny(full, self.t.deny)
        if deny is not None:
            return Decision("deny", full, deny.severity, deny.reason, deny.reference)
        parts = full.split(".")
        walk = [p for p in parts[1:] if p in self.t.walk_dunders]
        if walk:
            return Decision("unknown", full, Severity.HIGH,
                            f"attribute walk through {', '.join(walk)}: reaches objects the module never exported")
        return self._generated(full) or Decision("unknown", full, Severity.HIGH, "not on the allow list")

    def _generated(self, full: str) -> Decision | None:
        """The generated policy's verdict (hand allow / deny entries were consulted first and win)."""
        hit = generated(self._rules).lookup(full)
        if hit is None:
            return None
        code, why, lib = hit
        src = f"generated class policy ({lib})"
        if code[0] == "F":
            if code[1] == "s":
                return Decision("allow", full, Severity.INFO, f"{src}: no path from its body to a sink")
            return Decision("unknown", full, Severity.HIGH, f"{src}: calling it {why}", undecided=code[1] == "u")
        if code[1] == "x":
            # a path from __new__ / __setstate__ to a sink: state planted in the file reaches it. High, not
            # critical: the path exists for honest files of the class too (scipy.stats distributions exec
            # their pickled argument-parser template)
            return Decision("deny", full, Severity.HIGH, f"{src}: reconstructing it {why}")
        if code[1] != "s":
            return Decision("unknown", full, Severity.HIGH, f"{src}: reconstructing it {why}",
                            undecided="x" not in code[1:])
        if code[2] != "s":
            what = "reaches a sink" if code[2] == "x" else "cannot be decided"
            self._construct_only[full] = DenyRule(
                full, Severity.HIGH, f"{src}: calling it runs __init__, which {what}: {why}",
                rule="PICKLE-DANGEROUS-CALL" if code[2] == "x" else "PICKLE-UNKNOWN-GLOBAL")
        return Decision("allow", full, Severity.INFO,
                        f"{src}: no path from __new__ / __setstate__ to a sink")

    def _deny(self, full: str, table: dict[str, DenyRule]) -> DenyRule | None:
        """Longest deny entry matching the name or any dotted tail of it (`torch.serialization.os.system`
        reaches `os.system`); `__builtins__` / `__builtin__` components count as `builtins`."""
        if not table:
            return None
        parts = [self.t.aliases.get(p, p) if i == 0 or p.startswith("__") else p
                 for i, p in enumerate(full.split("."))]
        best: DenyRule | None = None
        # entries have few components: only tails that long can match (keeps a 3,000-part name linear)
        width = self._widths.get(id(table))
        if width is None:
            width = self._widths[id(table)] = max((k.count(".") + 1 for k in table), default=1)
        for start in range(len(parts)):
            for stop in range(min(len(parts), start + width), start, -1):
                rule = table.get(".".join(parts[start:stop]))
                if rule is not None:
                    if best is None or _better(rule, best, start == 0):
                        best = rule
                    break
        return best


def _better(new: DenyRule, old: DenyRule, anchored: bool) -> bool:
    if new.severity.rank != old.severity.rank:
        return new.severity.rank > old.severity.rank
    return anchored and len(new.name) > len(old.name)

"""Rules as data: load rules/*.toml, the rule catalog, and the user's policy (config file)."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from scanner.findings import Severity
from scanner.limits import Limits
from scanner.record import field, record


def toml_module() -> Any:
    """tomllib, imported on first use: a start-up served by compiled-rules.json never parses TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib


def rules_dir() -> Path:
    """Installed wheels carry the rules inside the package; a checkout keeps them at the top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_rules", here.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("modelseal rules directory not found (expected scanner/_rules or ./rules)")


@record(frozen=True)
class RuleMeta:
    id: str
    severity: Severity
    title: str
    help: str
    reference: str | None = None


class RuleSet:
    """All rule documents, keyed by file stem ("pickle-globals" for rules/pickle-globals.toml).

    Each document may declare rule metadata in `[rule.ID]` tables (severity, title, help, reference);
    analyzers read the rest of their own document. Compiled forms are cached on the instance.
    """

    def __init__(self, docs: dict[str, dict[str, Any]], digest: str, deferred: dict[str, str] | None = None) -> None:
        self._docs = docs
        # TOML text of documents that declare no rules, parsed on first use (pickle-globals.toml is most of
        # the parsing time of a start-up, and a scan that meets no pickle global never reads it)
        self._deferred = dict(deferred or {})
        self.digest = digest
        self.directory: Path | None = None  # where generated data (class policies) lives; None: rules_dir()
        self.catalog: dict[str, RuleMeta] = {}
        self._cache: dict[str, Any] = {}
        for stem, doc in sorted(docs.items()):
            for rid, meta in doc.get("rule", {}).items():
                if rid in self.catalog:
                    raise ValueError(f"rule {rid} declared twice (second time in {stem}.toml)")
                self.catalog[rid] = RuleMeta(
                    id=rid,
                    severity=Severity.parse(meta["severity"]),
                    title=meta["title"],
                    help=meta.get("help", meta["title"]),
                    reference=meta.get("reference"),
                )

    @property
    def docs(self) -> dict[str, dict[str, Any]]:
        for stem in list(self._deferred):
            self.doc(stem)
        return self._docs

    def doc(self, stem: str) -> dict[str, Any]:
        text = self._deferred.pop(stem, None)
        if text is not None:
            self._docs[stem] = toml_module().loads(text)
        return self._docs.get(stem, {})

    def cached(self, key: str, build: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def meta(self, rule_id: str) -> RuleMeta | None:
        return self.catalog.get(rule_id)


COMPILED = "generated/compiled-rules.json"
CLASS_POLICY_INDEX = "generated/class-policies/index.json"
POPULAR_MODULES = "generated/popular-modules.json"  # tools/gen_popular_modules.py


def load_ruleset(directory: Path | None = None) -> RuleSet:
    """Every rules/*.toml (the generated class-policy index counts toward the digest). A document whose
    bytes match its entry in generated/compiled-rules.json is taken from there (JSON loads in a fraction of
    the time TOML parses); any other is parsed from TOML: a stale compiled file costs time, never rules."""
    directory = directory or rules_dir()
    docs: dict[str, dict[str, Any]] = {}
    deferred: dict[str, str] = {}
    h = hashlib.sha256()
    compiled = _compiled(directory)
    for path in sorted(directory.glob("*.toml")):
        raw = path.read_bytes()
        h.update(path.name.encode() + b"\0" + raw + b"\0")
        entry = compiled.get(path.stem)
        if entry is not None and entry.get("sha256") == hashlib.sha256(raw).hexdigest():
            docs[path.stem] = entry["doc"]
            continue
        text = raw.decode("utf-8")
        if _MAY_DECLARE_RULES.search(text):
            docs[path.stem] = toml_module().loads(text)
        else:
            deferred[path.stem] = text
    for extra in (CLASS_POLICY_INDEX, POPULAR_MODULES):
        if (directory / extra).is_file():
            h.update(extra.encode() + b"\0" + (directory / extra).read_bytes() + b"\0")
    rs = RuleSet(docs, "sha256:" + h.hexdigest(), deferred)
    rs.directory = directory
    return rs


def _compiled(directory: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((directory / COMPILED).read_bytes())
    except (OSError, ValueError):
        return {}
    docs = data.get("docs") if isinstance(data, dict) else None
    return docs if isinstance(docs, dict) else {}


def compile_rules(directory: Path | None = None) -> Path:
    """Write generated/compiled-rules.json: each TOML document as JSON with the sha256 of its bytes."""
    import json

    directory = directory or rules_dir()
    docs = {}
    for path in sorted(directory.glob("*.toml")):
        raw = path.read_bytes()
        docs[path.stem] = {"sha256": hashlib.sha256(raw).hexdigest(), "doc": toml_module().loads(raw.decode("utf-8"))}
    out = directory / COMPILED
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generated_by": "python tools/compile_rules.py", "docs": docs},
                              separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    return out


# a line that could start the top-level `rule` table in any TOML spelling (conservative: a false match only
# means the document is parsed at once)
_MAY_DECLARE_RULES = re.compile(r"""(?m)^[ \t]*(?:\[\[?[ \t]*)?["']?rule\b""")


@record(frozen=True)
class DenyEntry:
    name: str
    severity: Severity
    reason: str
    reference: str | None = None


@record(frozen=True)
class Policy:
    """What the user decided: threshold, extra allowed / denied globals, ignored paths, limits."""

    fail_on: Severity = Severity.MEDIUM
    allow_globals: tuple[str, ...] = ()
    deny_globals: tuple[DenyEntry, ...] = ()
    ignore_paths: tuple[str, ...] = ()
    severity_overrides: dict[str, Severity] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def ignored(self, relpath: str) -> bool:
        return any(fnmatch.fnmatch(relpath, pat) for pat in self.ignore_paths)


class ConfigError(ValueError):
    pass


def load_policy(config: Path | None, fail_on: str | None = None) -> Policy:
    """Read `[tool.modelseal]` from a pyproject.toml, or a standalone TOML (top level or the same table).

    Only an explicitly named file is read: a scanned tree never configures its own scan.
    """
    table: dict[str, Any] = {}
    if config is not None:
        try:
            tomllib = toml_module()
            doc = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {config}: {e}") from None
        table = doc.get("tool", {}).get("modelseal", doc if "tool" not in doc else {})
    try:
        return _policy_from_table(table, fail_on)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"invalid modelseal config{f' in {config}' if config else ''}: {e}") from None


def _policy_from_table(table: dict[str, Any], fail_on: str | None) -> Policy:
    known = {"fail-on", "allow-globals", "deny-globals", "ignore-paths", "severity", "limits"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    level = Severity.parse(fail_on or table.get("fail-on", "medium"))
    allow = tuple(str(x) for x in table.get("allow-globals", []))
    deny: list[DenyEntry] = []
    for entry in table.get("deny-globals", []):
        if isinstance(entry, str):
            deny.append(DenyEntry(entry, Severity.HIGH, "denied by user configuration"))
        else:
            deny.append(DenyEntry(entry["name"], Severity.parse(entry.get("severity", "high")),
                                  entry.get("reason", "denied by user configuration"), entry.get("reference")))
    overrides = {k: Severity.parse(v) for k, v in table.get("severity", {}).items()}
    limits = Limits().with_overrides(dict(table.get("limits", {})))
    ignore = tuple(str(x) for x in table.get("ignore-paths", []))
    return Policy(level, allow, tuple(deny), ignore, overrides, limits)

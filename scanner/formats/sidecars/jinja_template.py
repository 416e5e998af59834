"""Static analysis of Jinja2 chat templates for sandbox escapes (U01, CVE-2024-34359).

The template is parsed with Jinja2's own parser (parsing builds an AST; nothing is compiled or rendered)
and the AST is walked for attribute access that leads out of the sandbox. Names and tiers are data in
rules/gguf.toml `[[template.names]]`. Reusable for chat templates found elsewhere (tokenizer_config.json).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanner.rules import RuleSet

MAX_FOLD_CHARS = 10_000
_DUNDER = re.compile(r"__[A-Za-z0-9]\w*?__")
_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d{4,}|%[-+ #0]*\*|%\.\d{4,}")


@dataclass(frozen=True)
class TemplateRules:
    tiers: dict[str, str]          # name -> escape | dunder | sink
    gadget_globals: frozenset[str]
    attr_filters: frozenset[str]
    attribute_name_filters: frozenset[str]
    loads: frozenset[str]


@dataclass(frozen=True)
class Hit:
    """One observation; `kind` is escape | dunder | sink | gadget | dynamic | load | malformed."""

    kind: str
    name: str
    how: str
    lineno: int | None = None


def template_rules(rules: RuleSet) -> TemplateRules:
    def build() -> TemplateRules:
        doc = rules.doc("gguf").get("template", {})
        tiers: dict[str, str] = {}
        for group in doc.get("names", []):
            for name in group["names"]:
                tiers.setdefault(name, group["tier"])
        gadgets = frozenset(n for g in doc.get("globals", []) for n in g["names"])
        filt = doc.get("filters", {})
        return TemplateRules(tiers, gadgets, frozenset(filt.get("attr", [])),
                             frozenset(filt.get("attribute_name", [])), frozenset(filt.get("loads", [])))

    return rules.cached("jinja_template.rules", build)  # type: ignore[no-any-return]


def _parse(source: str) -> Any:
    """Parse with the extensions chat templates rely on (loopcontrols, do, transformers' {% generation %})."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", Generation])
    # Parser directly: Environment.parse rewrites syntax-error tracebacks by compiling and exec'ing a stub
    from jinja2.parser import Parser

    return Parser(env, source).parse()


_TAG = re.compile(r"\{([{%])(.*?)(?:[}%]\}|\Z)", re.S)
_STRING = re.compile(r"'[^'\\]*(?:\\.[^'\\]*)*'|\"[^\"\\]*(?:\\.[^\"\\]*)*\"", re.S)
_OPEN_BLOCK = re.compile(r"^[-+]?\s*(?:if|for|macro|call|filter|with|block|raw|autoescape|trans|generation)\b|"
                         r"^[-+]?\s*set\s+[\w.,\s]+-?\s*$")
_END_BLOCK = re.compile(r"^[-+]?\s*end\w*")
_BRACKET = re.compile(r"[\[\](){}]")


def template_bounds(source: str, limits: Any = None) -> Hit | None:
    """Cheap pre-scan that bounds what Jinja2's parser would spend on the template, BEFORE it parses: filter
    chain length (`|` outside string literals), tag count, block nesting and bracket depth. A template over a
    bound is reported (malformed hit) and not parsed: filter-chain and nesting bombs cost seconds to parse."""
    if limits is None:
        from scanner.limits import Limits

        limits = Limits()
    tags = pipes = depth = max_depth = brackets = 0
    for m in _TAG.finditer(source):
        tags += 1
        if tags > limits.max_template_tags:
            return Hit("malformed", "tags", f"template has more than {limits.max_template_tags} tags "
                       "(max_template_tags); not parsed")
        body = _STRING.sub("''", m.group(2))
        pipes += body.count("|")
        if pipes > limits.max_template_filters:
            return Hit("malformed", "filters", f"template applies more than {limits.max_template_filters} filters "
                       "(max_template_filters); not parsed")
        if m.group(1) == "%":
            if _END_BLOCK.match(body):
                depth -= 1
            elif _OPEN_BLOCK.match(body):
                depth += 1
                max_depth = max(max_depth, depth)
        level = 0
        for b in _BRACKET.finditer(body):
            level += 1 if b.group() in "([{" else -1
            brackets = max(brackets, level)
        if max(max_depth, brackets) > limits.max_template_nesting:
            return Hit("malformed", "nesting", f"template nests blocks or brackets deeper than "
                       f"{limits.max_template_nesting} (max_template_nesting); not parsed")
    return None


def analyze_template(source: str, tr: TemplateRules, limits: Any = None) -> list[Hit]:
    """All hits for one template source; a parse failure is a single `malformed` hit."""
    bound = template_bounds(source, limits)
    if bound is not None:
        return [bound]
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        return [Hit("malformed", "jinja2 missing", "jinja2 is not installed; template not analyzed")]
    try:
        ast = _parse(source)
    except jinja2.TemplateSyntaxError as e:
        return [Hit("malformed", str(e.message or "")[:200], "syntax error", e.lineno)]
    except RecursionError:
        return [Hit("malformed", "nesting", "template nests too deeply to parse")]
    except Exception as e:  # noqa: BLE001 - any parser failure means the template was not analyzed
        return [Hit("malformed", type(e).__name__, str(e)[:200])]
    try:
        return list(_Walker(tr, ast).walk())
    except RecursionError:
        return [Hit("malformed", "nesting", "template nests too deeply to analyze")]


class _Walker:
    def __init__(self, tr: TemplateRules, ast: Any) -> None:
        from jinja2 import nodes

        self.n = nodes
        self.tr = tr
        self.ast = ast
        self.assigned: dict[str, str] = {}
        self.assigned_seq: dict[str, list[str]] = {}
        self.built: set[str] = set()  # variables (and namespace attributes) assembled from strings at render time

    def walk(self) -> Iterator[Hit]:
        n = self.n
        # constant string variables ({% set a = "__cla" ~ "ss__" %}), last assignment wins
        for node in self.ast.find_all(n.Assign):
            ref = _ref(n, node.target)
            if ref is not None and self._builds_string(node.node):
                self.built.add(ref)
            if isinstance(node.target, n.Name):
                value = self.fold(node.node)
                if value is not None:
                    self.assigned[node.target.name] = value
                elif isinstance(node.node, (n.List, n.Tuple)):
                    seq = self._seq(node.node)
                    if seq is not None:
                        self.assigned_seq[node.target.name] = seq
        for node in self.ast.find_all(n.Node):
            yield from self.visit(node)

    # -- names -----------------------------------------------------------------------------------
    def classify(self, name: str, how: str, lineno: int | None) -> Iterator[Hit]:
        for part in name.split("."):
            tier = self.tr.tiers.get(part)
            if tier is None and part.startswith("_"):
                tier = "dunder"  # any private attribute: sandboxes refuse them, templates never need them
            if tier is not None:
                yield Hit(tier, part, how, lineno)

    def strings(self, text: str, how: str, lineno: int | None) -> Iterator[Hit]:
        """Dunder / escape names inside a string constant (not yet an access: reported at most high)."""
        for m in _DUNDER.finditer(text):
            tier = self.tr.tiers.get(m.group(0), "dunder")
            yield Hit("dunder" if tier != "escape" else "escape-string", m.group(0), how, lineno)
        for word in re.findall(r"[A-Za-z_]\w+", text):
            if self.tr.tiers.get(word) == "escape" and not _DUNDER.fullmatch(word):
                yield Hit("escape-string", word, how, lineno)

    # -- nodes -------------------------------------------------------------------------------------
    def visit(self, node: Any) -> Iterator[Hit]:
        n = self.n
        line = getattr(node, "lineno", None)
        if isinstance(node, n.Getattr):
            yield from self.classify(node.attr, f".{node.attr}", line)
        elif isinstance(node, n.Getitem):
            key = self.fold(node.arg)
            if key is not None:
                yield from self.classify(key, f"[{key!r}]", line)
            elif _ref(n, node.arg) in self.built or self._builds_string(node.arg, top_only=True):
                # obj[name] falls back to getattr in Jinja: a key assembled at render time is |attr in disguise
                yield Hit("dynamic", "getitem", "subscript with a name assembled at render time", line)
        elif isinstance(node, n.Filter):
            yield from self.filter(node, line)
        elif isinstance(node, n.Name):
            if node.name in self.tr.gadget_globals:
                yield Hit("gadget", node.name, "global", line)
            if node.name.startswith("__"):
                yield from self.classify(node.name, "name", line)
        elif isinstance(node, n.Keyword):
            if _DUNDER.fullmatch(node.key):
                yield from self.classify(node.key, f"keyword {node.key}=", line)
        elif isinstance(node, (n.Include, n.Import, n.FromImport, n.Extends)):
            yield Hit("load", type(node).__name__.lower(), "loads another template", line)
        elif isinstance(node, (n.Const, n.Concat, n.Add, n.Mod, n.Call)):
            text = self.fold(node)
            if text is not None and (not isinstance(node, n.Const) or _DUNDER.search(text)):
                yield from self.strings(text, "string", line)
            elif isinstance(node, n.Const) and isinstance(node.value, str):
                yield from self.strings(node.value, "string", line)

    def filter(self, node: Any, line: int | None) -> Iterator[Hit]:
        n = self.n
        name = node.name
        args = list(node.args)
        if name in self.tr.attr_filters:
            target = self.fold(args[0]) if args else None
            if target is None:
                yield Hit("dynamic", "attr", "|attr() with a computed name", line)
            else:
                yield from self.classify(target, f"|attr({target!r})", line)
        elif name in self.tr.attribute_name_filters:
            if name == "map" and args and self.fold(args[0]) in self.tr.attr_filters:
                target = self.fold(args[1]) if len(args) > 1 else None
                if target is None:
                    yield Hit("dynamic", "attr", "map('attr', <computed>)", line)
                    args = []
                else:
                    args = args[1:]
            for arg in [*args, *(k.value for k in node.kwargs if isinstance(k, n.Keyword))]:
                text = self.fold(arg)
                if text is not None:
                    yield from self.classify(text, f"|{name}({text!r})", line)
        elif name in self.tr.loads:
            yield Hit("load", name, "filter loads templates", line)

    def _builds_string(self, expr: Any, *, top_only: bool = False) -> bool:
        """`~`, `%`, |join / |format / |replace, or `+` with a string constant: text assembled at render time."""
        n = self.n
        nodes = [expr] if top_only else [expr, *expr.find_all(n.Node)]
        for x in nodes:
            if isinstance(x, (n.Concat, n.Mod)):
                return True
            if isinstance(x, n.Filter) and x.name in ("join", "format", "replace", "reverse", "string"):
                return True
            if isinstance(x, n.Add) and any(isinstance(side, n.Const) and isinstance(side.value, str)
                                            for side in (x.left, x.right)):
                return True
        return False

    # -- constant folding ----------------------------------------------------------------------------
    def fold(self, node: Any) -> str | None:  # noqa: C901 - one case per node kind
        n = self.n
        out: Any = None
        if isinstance(node, n.Const):
            out = node.value if isinstance(node.value, str) else None
        elif isinstance(node, n.Name):
            out = self.assigned.get(node.name)
        elif isinstance(node, (n.Concat,)):
            parts = [self.fold(x) for x in node.nodes]
            ok = all(p is not None for p in parts) and _short(parts)
            out = "".join(parts) if ok else None  # type: ignore[arg-type]
        elif isinstance(node, n.Add):
            left, right = self.fold(node.left), self.fold(node.right)
            out = left + right if left is not None and right is not None else None
        elif isinstance(node, n.Mod):
            out = self._percent(node.left, [node.right] if not isinstance(node.right, n.Tuple) else node.right.items)
        elif isinstance(node, n.Filter) and node.node is not None:
            out = self._filter(node)
        elif isinstance(node, n.Call) and isinstance(node.node, n.Getattr):
            out = self._method(node)
        if isinstance(out, str) and len(out) <= MAX_FOLD_CHARS:
            return out
        return None

    def _const(self, node: Any) -> Any:
        n = self.n
        if isinstance(node, n.Const) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
            return node.value
        return self.fold(node)

    def _percent(self, fmt_node: Any, arg_nodes: list[Any]) -> str | None:
        fmt = self.fold(fmt_node)
        args = [self._const(a) for a in arg_nodes]
        if fmt is None or any(a is None for a in args) or _WIDE_FORMAT.search(fmt) or not _short([fmt, *args]):
            return None
        try:
            return fmt % tuple(args)
        except (TypeError, ValueError, OverflowError):
            return None

    def _seq(self, node: Any) -> list[str] | None:
        n = self.n
        if isinstance(node, (n.List, n.Tuple)):
            items = [self.fold(x) for x in node.items]
            return None if any(i is None for i in items) else items  # type: ignore[return-value]
        if isinstance(node, n.Name) and node.name in self.assigned_seq:
            return self.assigned_seq[node.name]
        text = self.fold(node)
        return list(text) if text is not None else None

    def _filter(self, node: Any) -> str | None:
        name, args = node.name, [self._const(a) for a in node.args]
        if any(a is None for a in args):
            return None
        if name == "format":
            return self._percent(node.node, list(node.args))
        if name == "join":
            seq = self._seq(node.node)
            sep = args[0] if args else ""
            ok = seq is not None and isinstance(sep, str) and _joinable(seq, sep)
            return sep.join(seq) if ok else None  # type: ignore[union-attr,arg-type]
        base = self.fold(node.node)
        if base is None:
            return None
        return _apply(name, base, args)

    def _method(self, node: Any) -> str | None:
        attr = node.node.attr
        if node.kwargs:
            return None
        if attr == "join" and len(node.args) == 1:
            sep = self.fold(node.node.node)
            seq = self._seq(node.args[0])
            ok = sep is not None and seq is not None and _joinable(seq, sep)
            return sep.join(seq) if ok else None  # type: ignore[union-attr,arg-type]
        args = [self._const(a) for a in node.args]
        if any(a is None for a in args):
            return None
        if attr == "format":
            return None  # str.format fields ({0.__class__}) are caught by the dunder scan of the constant
        base = self.fold(node.node.node)
        return _apply(attr, base, args) if base is not None else None


_STR_OPS: dict[str, Any] = {
    "reverse": lambda s: s[::-1], "lower": str.lower, "upper": str.upper, "title": str.title,
    "capitalize": str.capitalize, "strip": str.strip, "lstrip": str.lstrip, "rstrip": str.rstrip,
    "trim": str.strip, "string": str,
}


def _apply(name: str, base: str, args: list[Any]) -> str | None:
    """The string filters / methods attackers use to assemble names; anything else is not folded."""
    op = _STR_OPS.get(name)
    if op is not None and not args:
        return op(base)  # type: ignore[no-any-return]
    if name == "replace" and len(args) == 2 and all(isinstance(a, str) for a in args):
        old, new = args
        if old and len(base) + base.count(old) * len(new) <= MAX_FOLD_CHARS:
            return base.replace(old, new)
    return None


def _ref(n: Any, node: Any) -> str | None:
    """`x` for a name, `ns.attr` for a namespace attribute (as assigned or as read)."""
    if isinstance(node, n.Name):
        return str(node.name)
    if isinstance(node, n.NSRef):
        return f"{node.name}.{node.attr}"
    if isinstance(node, n.Getattr) and isinstance(node.node, n.Name):
        return f"{node.node.name}.{node.attr}"
    return None


def _joinable(seq: Any, sep: Any) -> bool:
    return sum(len(x) for x in seq) + len(sep) * len(seq) <= MAX_FOLD_CHARS


def _short(parts: list[Any]) -> bool:
    return sum(len(str(p)) for p in parts) <= MAX_FOLD_CHARS


def classify_hits(hits: list[Hit], kinds: dict[str, str]) -> list[tuple[str, Any, str]]:
    """Map hits to (rule id, severity override or None, message) with `kinds` (hit kind -> rule id); a dunder
    walk together with a process/exec sink is an escape chain even without a named terminal."""
    found = {h.kind for h in hits}
    chain = "dunder" in found and "sink" in found
    out: list[tuple[str, Any, str]] = []
    seen: set[tuple[str, str]] = set()
    for h in hits:
        rule = kinds[h.kind]
        if chain and h.kind in ("dunder", "sink"):
            rule = kinds["escape"]
        if (rule, h.name) in seen:
            continue
        seen.add((rule, h.name))
        where = f" (line {h.lineno})" if h.lineno else ""
        out.append((rule, None, f"{h.how} {h.name!r}{where}"))
    return out

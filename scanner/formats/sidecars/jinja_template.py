"""Static analysis of Jinja2 chat templates for sandbox escapes (U01, CVE-2024-34359).

The template is parsed with Jinja2's own parser (parsing builds an AST; nothing is compiled or rendered)
and the AST is walked for attribute access that leads out of the sandbox. Names and tiers are data in
rules/gguf.toml `[[template.names]]`. Reusable for chat templates found elsewhere (tokenizer_config.json).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    attribute_positions: dict[str, int] = field(default_factory=dict)


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
                             frozenset(filt.get("attribute_name", [])), frozenset(filt.get("loads", [])),
                             dict(filt.get("attribute_positions", {})))

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
        self.flow = _Flow(ast, self)

    def walk(self) -> Iterator[Hit]:
        n = self.n
        # constant string variables ({% set a = "__cla" ~ "ss__" %}), last assignment wins
        assigns = list(self.ast.find_all(n.Assign))
        for _ in range(len(assigns) + 1):  # a built name makes what is assigned from it built too
            before = len(self.built)
            for node in assigns:
                ref = _ref(n, node.target)
                if ref is not None and self._builds_string(node.node):
                    self.built.add(ref)
            if len(self.built) == before:
                break
        for node in assigns:
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
            yield from self.key(node.arg, "", line)
        elif isinstance(node, n.Call) and isinstance(node.node, n.Getattr) and node.node.attr in _KEYED_METHODS \
                and node.args:
            # d.get(name): the dict look-up of obj[name] without its getattr fallback (reaches __builtins__ keys)
            yield from self.key(node.args[0], f".{node.node.attr}", line)
            yield from self.visit_value(node, line)
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
            yield from self.visit_value(node, line)

    def visit_value(self, node: Any, line: int | None) -> Iterator[Hit]:
        """Names inside text the template builds (a folded expression or a string constant)."""
        n = self.n
        text = self.fold(node)
        if text is not None and (not isinstance(node, n.Const) or _DUNDER.search(text)):
            yield from self.strings(text, "string", line)
        elif isinstance(node, n.Const) and isinstance(node.value, str):
            yield from self.strings(node.value, "string", line)

    def key(self, arg: Any, how: str, line: int | None) -> Iterator[Hit]:
        """A subscript / .get key: a name when it folds or loops over folded names; else judged by origin."""
        n = self.n
        key = self.fold(arg)
        if key is not None:
            yield from self.classify(key, f"{how}[{key!r}]", line)
        elif (cands := self.flow.candidates(arg)) is not None:
            for c in cands:  # a loop variable over constant strings: each value is a key
                yield from self.classify(c, f"{how}[{c!r}]", line)
        elif _ref(n, arg) in self.built or self._builds_string(arg, top_only=True) or self.flow.computed_name(arg):
            # obj[name] falls back to getattr in Jinja: a key assembled at render time is |attr in disguise
            yield Hit("dynamic", "getitem", "subscript with a name assembled at render time", line)

    def names_of(self, arg: Any) -> list[str] | None:
        """What an argument can be: its folded text, or each value of a loop over folded names."""
        text = self.fold(arg)
        return [text] if text is not None else self.flow.candidates(arg)

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
            fnames = self.names_of(args[0]) if name == "map" and args else []
            if fnames is None:
                # map(<computed filter name>, ...): may be map('attr', name)
                yield Hit("dynamic", "map", "map() with a computed filter name", line)
                args = []
            elif fnames and set(fnames) & self.tr.attr_filters:
                targets = self.names_of(args[1]) if len(args) > 1 else None
                if targets is None:
                    yield Hit("dynamic", "attr", "map('attr', <computed>)", line)
                    args = []
                else:
                    for t in targets:
                        yield from self.classify(t, f"|map('attr', {t!r})", line)
                    args = args[1:]
            named = [k.value for k in node.kwargs if isinstance(k, n.Keyword) and k.key == "attribute"]
            pos = self.tr.attribute_positions.get(name)
            if pos is not None and pos < len(args):
                named.append(args[pos])
            for arg in named:
                if self.fold(arg) is None and not _int_const(n, arg):
                    # environment.getattr on each dotted part: |attr with a computed name
                    yield Hit("dynamic", name, f"|{name}() with a computed attribute name", line)
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
            if isinstance(x, n.Filter) and x.name in _BUILDING_FILTERS:
                return True
            if isinstance(x, (n.Add, n.Mul)) and any(
                    isinstance(side, n.Const) and isinstance(side.value, str) or _ref(n, side) in self.built
                    or self.fold(side) is not None for side in (x.left, x.right)):
                return True
            if isinstance(x, (n.Name, n.NSRef, n.Getattr)) and x is not expr and _ref(n, x) in self.built:
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
        elif isinstance(node, n.Mul):
            out = self._repeat(node)
        elif isinstance(node, n.Getitem) and _int_value(n, node.arg) is not None:
            seq = self._seq(node.node)
            i = _int_value(n, node.arg)
            out = seq[i] if seq is not None and -len(seq) <= i < len(seq) else None  # type: ignore[operator]
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

    def _repeat(self, node: Any) -> str | None:
        n = self.n
        for text_node, count_node in ((node.left, node.right), (node.right, node.left)):
            text = self.fold(text_node)
            count = count_node.value if isinstance(count_node, n.Const) else None
            if text is not None and isinstance(count, int) and not isinstance(count, bool) and \
                    0 <= count and len(text) * count <= MAX_FOLD_CHARS:
                return text * count
        return None

    def _seq(self, node: Any) -> list[str] | None:
        n = self.n
        if isinstance(node, n.Call) and isinstance(node.node, n.Name) and node.node.name == "dict" \
                and not node.args and not node.dyn_args and not node.dyn_kwargs:
            return [k.key for k in node.kwargs]  # dict(a=1): iterating yields the keyword names
        if isinstance(node, n.Filter) and node.name in ("list", "sort", "unique") and not node.args \
                and not node.kwargs and node.node is not None and node.name == "list":
            return self._seq(node.node)
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
        if name in ("first", "last") and not args:
            seq = self._seq(node.node)
            return (seq[0] if name == "first" else seq[-1]) if seq else None
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


_KEYED_METHODS = frozenset({"get", "pop", "setdefault"})
# filters whose result is text assembled at render time (others are judged by where their input comes from)
_BUILDING_FILTERS = frozenset({"join", "format", "replace", "reverse", "string"})


class _Flow:
    """Where a subscript key comes from: the render context (messages, tools: data the template indexes by),
    numbers (counters, range), or constants the template computes with operations not folded above. Only the
    last is a name the template author chose while hiding it: `m[k]` falls back to getattr(m, k)."""

    _NUMERIC_FILTERS = frozenset({"length", "count", "int", "float", "abs", "round", "sum"})

    def __init__(self, ast: Any, walker: _Walker) -> None:
        from jinja2 import nodes as n

        self.n = n
        self.walker = walker
        self.sources: dict[str, list[Any]] = {}   # name -> assigned expressions (None: unknown, tuple: loop)
        self.numeric_iter: set[str] = set()       # loop targets over range(...)
        for a in ast.find_all(n.Assign):
            self._bind(a.target, a.node)
            if isinstance(a.target, n.Name) and isinstance(a.node, n.Call) and \
                    isinstance(a.node.node, n.Name) and a.node.node.name == "namespace":
                for k in a.node.kwargs:
                    self.sources.setdefault(f"{a.target.name}.{k.key}", []).append(k.value)
        for a in ast.find_all(n.AssignBlock):
            self._bind(a.target, None)
        for f in ast.find_all(n.For):
            ranged = isinstance(f.iter, n.Call) and isinstance(f.iter.node, n.Name) and f.iter.node.name == "range"
            for t in ([f.target] if isinstance(f.target, n.Name) else list(f.target.find_all(n.Name))):
                if ranged:
                    self.numeric_iter.add(t.name)
                self.sources.setdefault(t.name, []).append(("iter", f.iter))
        calls: dict[str, list[Any]] = {}
        for c in ast.find_all(n.Call):
            if isinstance(c.node, n.Name):
                calls.setdefault(c.node.name, []).append(c)
        for m in ast.find_all(n.Macro):
            self.sources.setdefault(m.name, []).append(None)  # a macro object: the template's own
            for i, arg in enumerate(m.args):  # a parameter holds what the call sites pass
                bound = self.sources.setdefault(arg.name, [])
                for c in calls.get(m.name, []):
                    kw = [k.value for k in c.kwargs if k.key == arg.name]
                    bound.append(kw[0] if kw else c.args[i] if i < len(c.args) else
                                 (m.defaults[i - len(m.args) + len(m.defaults)]
                                  if i >= len(m.args) - len(m.defaults) else None))
                    if c.dyn_args is not None or c.dyn_kwargs is not None:
                        bound.append(None)
        for m in ast.find_all(n.CallBlock):
            for arg in m.args:
                self.sources.setdefault(arg.name, []).append(None)
        assigned = set(self.sources)
        loaded = {x.name for x in ast.find_all(n.Name) if x.ctx == "load"}
        self.context = {x for x in loaded if x not in assigned} - {"range", "dict", "namespace", "lipsum", "cycler",
                                                                   "joiner", "self", "caller", "varargs", "kwargs"}
        self._ctx_memo: dict[str, bool] = {}
        self._num_memo: dict[str, bool] = {}

    def _bind(self, target: Any, value: Any) -> None:
        n = self.n
        if isinstance(target, n.Name):
            self.sources.setdefault(target.name, []).append(value)
        elif isinstance(target, n.NSRef):
            self.sources.setdefault(f"{target.name}.{target.attr}", []).append(value)
        elif isinstance(target, n.Tuple):
            for t in target.items:
                self._bind(t, None)

    def candidates(self, key: Any) -> list[str] | None:
        """Values of a loop variable whose every binding iterates a list of strings that fold."""
        n = self.n
        if not isinstance(key, n.Name) or key.name not in self.sources:
            return None
        out: list[str] = []
        for v in self.sources[key.name]:
            if not isinstance(v, tuple):
                return None
            seq = self.walker._seq(v[1])  # noqa: SLF001 - the walker's folding, shared
            if seq is None or isinstance(v[1], n.Const):
                return None
            out.extend(seq)
        return out

    def computed_name(self, key: Any) -> bool:
        if isinstance(key, self.n.Slice):
            return False
        return self.walker.fold(key) is None and not self.numeric(key) and not self.data_only(key)

    def data_only(self, expr: Any) -> bool:
        """Built only from the render context and numbers: no text, keyword name, macro or global of the
        template's own on the way (`m[messages and '_func']` carries a constant, `message[key]` does not)."""
        n = self.n
        if isinstance(expr, n.Const):
            return not isinstance(expr.value, str)
        if isinstance(expr, n.Keyword):
            return False  # dict(_=1): the keyword is text the template wrote
        ref = _ref(n, expr) if isinstance(expr, (n.Name, n.NSRef)) else None
        if ref is not None:
            return self._data_ref(ref)
        return all(self.data_only(c) for c in expr.iter_child_nodes())

    def _data_ref(self, ref: str) -> bool:
        base = ref.split(".")[0]
        if base in self.context or base == "loop":
            return True
        hit = self._ctx_memo.get(ref)
        if hit is not None:
            return hit
        self._ctx_memo[ref] = True  # cycles: the other bindings decide
        vals = self.sources.get(ref) or self.sources.get(base) or []
        out = bool(vals) and all(v is not None and self.data_only(v[1] if isinstance(v, tuple) else v)
                                 for v in vals)
        self._ctx_memo[ref] = out
        return out

    def numeric(self, expr: Any) -> bool:  # noqa: C901 - one case per node kind
        n = self.n
        if isinstance(expr, n.Const):
            return isinstance(expr.value, (int, float)) and not isinstance(expr.value, bool)
        if isinstance(expr, (n.Add, n.Sub, n.Mul, n.Div, n.FloorDiv, n.Mod, n.Pow)):
            return self.numeric(expr.left) and self.numeric(expr.right)
        if isinstance(expr, (n.Neg, n.Pos)):
            return self.numeric(expr.node)
        if isinstance(expr, n.CondExpr):
            return self.numeric(expr.expr1) and (expr.expr2 is None or self.numeric(expr.expr2))
        if isinstance(expr, n.Filter):
            return expr.name in self._NUMERIC_FILTERS and not expr.kwargs
        if isinstance(expr, n.Getattr) and isinstance(expr.node, n.Name) and expr.node.name == "loop":
            return True
        ref = _ref(n, expr)
        if ref is None:
            return False
        if ref in self.numeric_iter:
            return True
        hit = self._num_memo.get(ref)
        if hit is not None:
            return hit
        self._num_memo[ref] = True  # counters refer to themselves (ns.i = ns.i + 1): the other values decide
        vals = self.sources.get(ref, [])
        out = bool(vals) and all(v is not None and not isinstance(v, tuple) and self.numeric(v) for v in vals)
        self._num_memo[ref] = out
        return out


def _int_value(n: Any, node: Any) -> int | None:
    if isinstance(node, n.Neg):
        inner = _int_value(n, node.node)
        return None if inner is None else -inner
    return node.value if _int_const(n, node) else None


def _int_const(n: Any, node: Any) -> bool:
    return isinstance(node, n.Const) and isinstance(node.value, int)


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

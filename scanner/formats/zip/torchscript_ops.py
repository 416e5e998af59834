"""Which operators TorchScript code reaches, whatever the spelling: names resolved the way the source importer
(torch/csrc/jit/serialization/import_source.cpp) resolves them, never by matching text.

The importer binds `torch` to the builtin module `aten` and `ops` to the op-namespace table; an attribute of
a builtin module is the operator `ns::attr` (`autograd` stays `aten`), `getattr(x, "lit")` is `x.lit`, and a
name assigned such a value keeps it. The code is read with Python's tokenizer (no `compile`, nothing run);
identifiers are NFKC-folded, a superset of TorchScript's ASCII ones."""

from __future__ import annotations

import codecs
import io
import tokenize
import unicodedata
from dataclasses import dataclass

MAX_PASSES = 8
MAX_TOKENS = 2_000_000
SKIP = (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)


@dataclass(frozen=True)
class Ns:
    name: str  # "" is the `ops` table itself


@dataclass(frozen=True)
class Op:
    qualname: str


Value = Ns | Op
ROOTS: dict[str, Value] = {"torch": Ns("aten"), "ops": Ns("")}


@dataclass(frozen=True)
class OpRef:
    qualname: str
    lineno: int
    col: int


@dataclass(frozen=True)
class _Tok:
    kind: int
    text: str
    line: int
    col: int


def _attr(base: Value | None, field: str) -> Value | None:
    if isinstance(base, Ns):
        if base.name == "":
            return Ns(field)
        if field == "autograd":
            return Ns("aten")
        if base.name == "aten" and field == "ops":
            return Ns("")  # Python's spelling torch.ops.<ns>.<op> (not TorchScript's, but the same operator)
        return Op(f"{base.name}::{field}")
    if isinstance(base, Op):
        return base  # an overload (`.Tensor`, `.default`) is the same operator
    return None


def _string(text: str) -> str | None:
    """The value of a plain string literal token (no f-strings)."""
    i = 0
    while i < len(text) and text[i] in "rRbBuU":
        i += 1
    prefix, body = text[:i].lower(), text[i:]
    if "f" in prefix or "b" in prefix:
        return None
    q = 3 if body[:3] in ('"""', "'''") else 1
    inner = body[q:-q]
    if "r" in prefix:
        return inner
    try:
        return codecs.decode(inner.encode("latin-1", "backslashreplace"), "unicode_escape")
    except (UnicodeDecodeError, UnicodeEncodeError, ValueError):
        return None


class _Resolver:
    def __init__(self, toks: list[_Tok]) -> None:
        self.t = toks
        self.env: dict[str, Value] = dict(ROOTS)
        self.refs: dict[tuple[int, int], OpRef] = {}

    def _is(self, i: int, text: str) -> bool:
        return i < len(self.t) and self.t[i].kind == tokenize.OP and self.t[i].text == text

    def chain(self, i: int, note: bool) -> tuple[Value | None, int]:
        """Resolve the primary at token i and its `.name` tail; returns the value and the next index."""
        t = self.t
        if i >= len(t) or t[i].kind != tokenize.NAME:
            return None, i
        start = t[i]
        if t[i].text == "getattr" and self._is(i + 1, "("):
            base, j = self.chain(i + 2, note)
            if self._is(j, ",") and j + 1 < len(t) and t[j + 1].kind == tokenize.STRING and self._is(j + 2, ")"):
                lit = _string(t[j + 1].text)
                v = _attr(base, lit) if lit is not None else None
                self._note(v, start, note)
                i = j + 3
            else:
                return None, i + 1
        else:
            v = self.env.get(t[i].text)
            i += 1
        while self._is(i, ".") and i + 1 < len(t) and t[i + 1].kind == tokenize.NAME:
            v = _attr(v, t[i + 1].text)
            self._note(v, start, note)
            i += 2
        return v, i

    def _note(self, v: Value | None, tok: _Tok, note: bool) -> None:
        if note and isinstance(v, Op):
            self.refs.setdefault((tok.line, tok.col), OpRef(v.qualname, tok.line, tok.col))

    def _statements(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for k, tok in enumerate(self.t):
            if tok.kind in (tokenize.NEWLINE, tokenize.ENDMARKER) or (tok.kind == tokenize.OP and tok.text == ";"):
                if k > start:
                    out.append((start, k))
                start = k + 1
        return out

    def _split(self, a: int, b: int, sep: str) -> list[tuple[int, int]]:
        parts, depth, s = [], 0, a
        for k in range(a, b):
            tok = self.t[k]
            if tok.kind == tokenize.OP:
                if tok.text in "([{":
                    depth += 1
                elif tok.text in ")]}":
                    depth -= 1
                elif depth == 0 and tok.text == sep:
                    parts.append((s, k))
                    s = k + 1
        parts.append((s, b))
        return parts

    def _exact(self, a: int, b: int) -> Value | None:
        v, end = self.chain(a, False)
        return v if end == b else None

    def _bind(self, a: int, b: int) -> bool:
        """`targets = value` statements (tuples and chained `=` too): names that now hold a namespace or op."""
        pieces = self._split(a, b, "=")
        if len(pieces) < 2:
            return False
        vals = self._split(*pieces[-1], ",")
        resolved = [self._exact(x, y) for x, y in vals]
        changed = False
        for ta, tb in pieces[:-1]:
            targets = self._split(ta, tb, ",")
            for n, (x, y) in enumerate(targets):
                # `name = v` or annotated `name: T = v`
                if y - x >= 1 and self.t[x].kind == tokenize.NAME and (y - x == 1 or self._is(x + 1, ":")):
                    v = resolved[n] if len(targets) == len(resolved) else (resolved[0] if len(vals) == 1 else None)
                    if v is not None and self.env.get(self.t[x].text) != v:
                        self.env[self.t[x].text] = v
                        changed = True
        return changed

    def run(self) -> None:
        stmts = self._statements()
        binds = [s for s in stmts if any(self._is(k, "=") for k in range(*s))]
        for _ in range(MAX_PASSES):  # aliases may be used before the line that binds them (flow-insensitive)
            if not any([self._bind(a, b) for a, b in binds]):
                break
        for i, tok in enumerate(self.t):
            if tok.kind == tokenize.NAME and not (i > 0 and self._is(i - 1, ".")):
                self.chain(i, True)


def resolve_ops(text: str) -> list[OpRef] | None:
    """Every operator reference in the code (None: Python's tokenizer rejects it)."""
    toks: list[_Tok] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in SKIP:
                continue
            s = unicodedata.normalize("NFKC", tok.string) if tok.type == tokenize.NAME else tok.string
            toks.append(_Tok(tok.type, s, tok.start[0], tok.start[1]))
            if len(toks) > MAX_TOKENS:
                return None
    except (tokenize.TokenError, IndentationError, SyntaxError, ValueError):
        return None
    r = _Resolver(toks)
    r.run()
    return sorted(r.refs.values(), key=lambda o: (o.lineno, o.col))

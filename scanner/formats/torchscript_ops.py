"""Which operators TorchScript code reaches, whatever the spelling: names resolved the way the source importer
(torch/csrc/jit/serialization/import_source.cpp) resolves them, never by matching text.

The importer binds `torch` to the builtin module `aten` and `ops` to the op-namespace table; an attribute of
a builtin module is the operator `ns::attr` (`autograd` stays `aten`), `getattr(x, "lit")` is `x.lit`, and a
name assigned such a value keeps it. Python's parser reads the code (NFKC-folding identifiers, a superset of
TorchScript's ASCII ones); nothing is compiled or run."""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class Ns:
    name: str  # "" is the `ops` table itself


@dataclass(frozen=True)
class Op:
    qualname: str


Value = Ns | Op
ROOTS: dict[str, Value] = {"torch": Ns("aten"), "ops": Ns("")}
MAX_PASSES = 8


@dataclass(frozen=True)
class OpRef:
    qualname: str
    lineno: int
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


class _Resolver:
    def __init__(self) -> None:
        self.env: dict[str, Value] = dict(ROOTS)
        self.refs: dict[tuple[int, int], OpRef] = {}

    def value(self, node: ast.AST) -> Value | None:
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute):
            v = _attr(self.value(node.value), node.attr)
            self._note(v, node)
            return v
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str):
            v = _attr(self.value(node.args[0]), node.args[1].value)
            self._note(v, node)
            return v
        return None

    def _note(self, v: Value | None, node: ast.AST) -> None:
        if isinstance(v, Op):
            key = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
            self.refs.setdefault(key, OpRef(v.qualname, key[0], key[1]))

    def bind(self, target: ast.AST, v: Value | None) -> bool:
        if isinstance(target, ast.Name) and v is not None and self.env.get(target.id) != v:
            self.env[target.id] = v
            return True
        return False

    def run(self, tree: ast.AST) -> None:
        nodes = list(ast.walk(tree))
        binds = [n for n in nodes if isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr))]
        for _ in range(MAX_PASSES):  # aliases may be used before the line that binds them (flow-insensitive)
            changed = False
            for node in binds:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                            for a, b in zip(t.elts, node.value.elts, strict=False):
                                changed |= self.bind(a, self.value(b))
                        else:
                            changed |= self.bind(t, self.value(node.value))
                elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                    changed |= self.bind(node.target, self.value(node.value))
            if not changed:
                break
        for node in nodes:
            if isinstance(node, (ast.Attribute, ast.Call)):
                self.value(node)


def resolve_ops(text: str) -> list[OpRef] | None:
    """Every operator reference in the code (None: Python's parser rejects it)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    r = _Resolver()
    try:
        r.run(tree)
    except RecursionError:
        return None
    return sorted(r.refs.values(), key=lambda o: (o.lineno, o.col))

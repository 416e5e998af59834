"""Symbolic values of the pickle machine and their bounded rendering as evidence."""

from __future__ import annotations


class Global:
    """An imported object: `module.name` (name may be dotted; empty for a module reference)."""

    __slots__ = ("module", "name", "via", "full")

    def __init__(self, module: str, name: str, via: str | None = None) -> None:
        self.module = module
        self.name = name
        self.via = via  # how it was reached when not by an import opcode (getattr / __import__ calls)
        self.full = f"{module}.{name}" if name else module

    def __repr__(self) -> str:
        return f"Global({self.full!r})"


class Call:
    """The result of calling `func` with `args` (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD's setstate)."""

    __slots__ = ("func", "args", "kwargs", "kind", "const", "state", "setstate", "guard")

    def __init__(self, func: object, args: object, kind: str, kwargs: object = None) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.kind = kind
        self.const: object = NOCONST  # value folded from a pure decoder call (base64, zlib ...)
        self.state: object = None     # what BUILD gave it
        self.setstate: object = None  # a `__setstate__` planted through BUILD
        self.guard: object = None     # (state key, reason) whose presence in BUILD's state makes it unsafe

    def __repr__(self) -> str:
        return f"Call({render(self)})"


class Unknown:
    """Anything not statically known (extension codes, out-of-band buffers, array data)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason})"


class PersistentRef(Unknown):
    """What a PERSID / BINPERSID resolves to: decided by the loader's persistent_load."""

    __slots__ = ("pid",)

    def __init__(self, pid: object) -> None:
        super().__init__("persistent id")
        self.pid = pid


class _NoConst:
    def __repr__(self) -> str:
        return "NOCONST"


NOCONST = _NoConst()


def const(value: object) -> object:
    """The constant a value stands for (folded decoder calls included), or NOCONST."""
    if isinstance(value, Call):
        return value.const
    if isinstance(value, (Global, Unknown)):
        return NOCONST
    return value


def render(value: object, limit: int = 400) -> str:
    out = _Out(limit)
    _render(value, out, 0)
    text = "".join(out.parts)
    return text if len(text) <= limit else text[:limit] + "…"


class _Out:
    __slots__ = ("parts", "left")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit + 1

    def append(self, s: str) -> None:
        self.parts.append(s)
        self.left -= len(s)


def _render(v: object, out: _Out, depth: int) -> None:
    if out.left <= 0:
        return
    if depth > 12:
        out.append("…")
        return
    if isinstance(v, Global):
        out.append(v.via if v.via else v.full)
    elif isinstance(v, Call):
        if v.const is not NOCONST and depth > 0:
            _render(v.const, out, depth + 1)
            return
        if depth > 0:
            out.append("<")
        _render(v.func, out, depth + 1)
        out.append("(")
        args = v.args
        if isinstance(args, tuple):
            for i, a in enumerate(args):
                if i:
                    out.append(", ")
                _render(a, out, depth + 1)
        else:
            out.append("*")
            _render(args, out, depth + 1)
        if isinstance(v.kwargs, dict):
            for k, val in v.kwargs.items():
                out.append(f", {k}=")
                _render(val, out, depth + 1)
        out.append(")")
        if depth > 0:
            out.append(">")
    elif isinstance(v, PersistentRef):
        out.append("<persistent ")
        _render(v.pid, out, depth + 1)
        out.append(">")
    elif isinstance(v, Unknown):
        out.append(f"<{v.reason}>")
    elif isinstance(v, (tuple, list, set, frozenset)):
        open_, close = {tuple: "()", list: "[]", set: "{}", frozenset: "{}"}.get(type(v), "()")
        out.append(open_)
        for i, item in enumerate(v):
            if i >= 8:
                out.append(f", …{len(v) - 8} more")
                break
            if i:
                out.append(", ")
            _render(item, out, depth + 1)
        if isinstance(v, tuple) and len(v) == 1:
            out.append(",")
        out.append(close)
    elif isinstance(v, dict):
        out.append("{")
        for i, (k, val) in enumerate(v.items()):
            if i >= 8:
                out.append(f", …{len(v) - 8} more")
                break
            if i:
                out.append(", ")
            _render(k, out, depth + 1)
            out.append(": ")
            _render(val, out, depth + 1)
        out.append("}")
    elif isinstance(v, memoryview):
        out.append(f"<{v.nbytes} bytes>")
    elif isinstance(v, (str, bytes, bytearray)):
        out.append(repr(v[:200]) + ("…" if len(v) > 200 else ""))
    elif isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 256:
        out.append(f"<int of {v.bit_length()} bits>")
    else:
        out.append(repr(v))

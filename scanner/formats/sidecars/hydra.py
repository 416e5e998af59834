"""Hydra `_target_` keys found the way `OmegaConf.load` + `hydra.utils.instantiate` find them.

OmegaConf.load reads any file name (YAML, and JSON as YAML) with PyYAML's SafeLoader; instantiate calls the
`_target_` of every mapping at any depth, after resolving OmegaConf interpolations (`${a.b}`, `${..x}`,
`${oc.select:k,default}`). The document is composed (nodes only, nothing constructed) and each target is
resolved against the same tree; a target that depends on anything else (environment, custom resolvers,
`oc.decode`) cannot be named and is reported as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from scanner.record import record

TARGET_KEY = "_target_"
_MAX_NODES = 1_000_000
_MAX_DEPTH = 16
_MAX_CANDIDATES = 64
_MAX_STEPS = 10_000  # distinct (value, place) resolutions per target
_NODE_REF = re.compile(r"^\.*[\w\-]+(?:(?:\.[\w\-]+)|(?:\[[\w\-]+\]))*$|^\.+$")
_SELECT = ("oc.select:", "oc.select :")
_FOLD = re.compile(rb"\\\r?\n[ \t]*")  # an escaped line break inside double quotes joins the lines
_HEX = re.compile(rb"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")


Memo = dict[tuple[str, tuple[str, ...]], set[str | None]]


class TooLarge(Exception):
    """More nodes than the walk bound."""


@record(frozen=True)
class Target:
    raw: str                  # the value as written
    names: tuple[str, ...]    # every dotted name it can resolve to
    unresolved: str = ""      # why some resolution is unknown ("" when every candidate is a name)
    path: str = ""            # key path of the mapping that holds it


def could_hold_targets(data: bytes) -> bool:
    """Cheap pre-test: the key spelled out, or spelled once double-quoted escapes are decoded and escaped line
    breaks folded (YAML and JSON read `"\\x5ftarget_"`, `"\\u005ftarget_"`, `"_tar\\<newline>  get_"` as the key)."""
    if b"_target_" in data:
        return True
    if b"\\" not in data:
        return False
    folded = _FOLD.sub(b"", data)
    return b"_target_" in _HEX.sub(_decode_escape, folded)


def _decode_escape(m: re.Match[bytes]) -> bytes:
    code = int(next(g for g in m.groups() if g), 16)
    return chr(code).encode("utf-8", "ignore") if code <= 0x10FFFF else b""


def compose(text: str) -> list[object] | None:
    """Every YAML document as plain dicts / lists / strings (aliases shared, not copied); None when PyYAML
    is not installed. Raises ValueError where OmegaConf.load fails to parse."""
    try:
        import yaml
    except ImportError:
        return None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError) as e:
        raise ValueError(str(e)[:200]) from e
    memo: dict[int, object] = {}
    count = [0]
    return [_plain(n, memo, count, yaml) for n in nodes if n is not None]


def _plain(node: Any, memo: dict[int, object], count: list[int], yaml: Any) -> object:
    hit = memo.get(id(node))
    if hit is not None:
        return hit
    count[0] += 1
    if count[0] > _MAX_NODES:
        raise TooLarge
    if isinstance(node, yaml.MappingNode):
        out: dict[str, object] = {}
        memo[id(node)] = out
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else f"<{k.tag}>"
            if key == "<<" and isinstance(v, (yaml.MappingNode, yaml.SequenceNode)):
                # merge keys: keep the merged mapping(s) reachable; its own keys are walked there
                out.setdefault("<<", _plain(v, memo, count, yaml))
                continue
            out[key] = _plain(v, memo, count, yaml)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq: list[object] = []
        memo[id(node)] = seq
        seq.extend(_plain(v, memo, count, yaml) for v in node.value)
        return seq
    memo[id(node)] = node.value
    return node.value


def targets(roots: list[object]) -> Iterator[Target]:
    """Each `_target_` string in the trees, resolved (each shared node once). Raises TooLarge."""
    for root in roots:
        seen: set[int] = set()
        stack: list[tuple[object, tuple[str, ...]]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if len(seen) > _MAX_NODES:
                raise TooLarge
            if isinstance(node, dict):
                raw = node.get(TARGET_KEY)
                if isinstance(raw, str):
                    cands = _resolve(raw, root, path, 0, {})
                    names = tuple(sorted({c for c in cands if c is not None}))
                    why = "" if None not in cands else _why(raw)
                    yield Target(raw, names, why, ".".join(path))
                stack.extend((v, (*path, str(k))) for k, v in node.items())
            elif isinstance(node, list):
                stack.extend((v, (*path, str(i))) for i, v in enumerate(node))


def _why(raw: str) -> str:
    if "oc.env" in raw:
        return "depends on an environment variable"
    if "${" in raw:
        return "built by an interpolation modelseal cannot resolve from the file"
    return "cannot be read"


def _resolve(value: str, root: object, path: tuple[str, ...], depth: int, memo: Memo) -> set[str | None]:
    """Candidate results of OmegaConf string interpolation (None: unknown)."""
    if "${" not in value:
        return {value.replace("\\${", "${")} if "\\$" in value else {value}
    if depth > _MAX_DEPTH or len(memo) > _MAX_STEPS:
        return {None}
    key = (value, path)
    hit = memo.get(key)
    if hit is None:
        memo[key] = {None}  # a reference cycle resolves to unknown
        hit = memo[key] = _resolve_parts(value, root, path, depth, memo)
    return hit


def _resolve_parts(value: str, root: object, path: tuple[str, ...], depth: int, memo: Memo) -> set[str | None]:
    parts = _split(value)
    if parts is None:
        return {None}
    out: set[str | None] = {""}
    for kind, text in parts:
        if kind == "lit":
            step: set[str | None] = {text}
        else:
            step = set()
            for inner in _resolve(text, root, path, depth + 1, memo) if "${" in text else {text}:
                step |= {None} if inner is None else _evaluate(inner.strip(), root, path, depth, memo)
        out = {None if a is None or b is None else a + b for a in out for b in step}
        if len(out) > _MAX_CANDIDATES:
            return {None}
    return out


def _split(value: str) -> list[tuple[str, str]] | None:
    """Literal text and `${...}` bodies (nested interpolations kept inside their body)."""
    parts: list[tuple[str, str]] = []
    i, lit = 0, []
    while i < len(value):
        if value.startswith("\\${", i):
            lit.append("${")
            i += 3
        elif value.startswith("${", i):
            depth, j, quote = 1, i + 2, ""
            while j < len(value) and depth:
                ch = value[j]
                if quote:
                    if ch == "\\":
                        j += 1
                    elif ch == quote:
                        quote = ""
                elif ch in "'\"":
                    quote = ch
                elif value.startswith("${", j):
                    depth += 1
                    j += 1
                elif ch == "}":
                    depth -= 1
                j += 1
            if depth:
                return None
            if lit:
                parts.append(("lit", "".join(lit)))
                lit = []
            parts.append(("expr", value[i + 2:j - 1]))
            i = j
        else:
            lit.append(value[i])
            i += 1
    if lit:
        parts.append(("lit", "".join(lit)))
    return parts


def _evaluate(expr: str, root: object, path: tuple[str, ...], depth: int, memo: Memo) -> set[str | None]:
    if _NODE_REF.match(expr):
        return _select(expr, root, path, depth, memo)
    for prefix in _SELECT:
        if expr.startswith(prefix):
            key, _, default = expr[len(prefix):].partition(",")
            got = _select(key.strip(), root, path, depth, memo, missing=True)
            if got != {"<missing>"}:
                return got
            return {_unquote(default.strip())} if default else {None}
    return {None}  # oc.env, oc.decode, oc.create, custom resolvers: not decided by the file


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s


def _select(ref: str, root: object, path: tuple[str, ...], depth: int, memo: Memo, *, missing: bool = False
            ) -> set[str | None]:
    keys = [k for k in re.split(r"[.\[\]]+", ref.lstrip(".")) if k]
    dots = len(ref) - len(ref.lstrip("."))
    base: tuple[str, ...] = () if dots == 0 else path[:max(0, len(path) - (dots - 1))]
    if dots and dots - 1 > len(path):
        return {None}
    node: object = root
    here: list[str] = []
    for k in (*base, *keys):
        if isinstance(node, dict) and k in node:
            node = node[k]
        elif isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        else:
            return {"<missing>"} if missing else {None}
        here.append(k)
    if isinstance(node, str):
        return _resolve(node, root, tuple(here[:-1]), depth + 1, memo)
    return {None}

"""joblib's array side channel: after BUILD of a NumpyArrayWrapper the raw array bytes (or, for object
dtypes, a nested pickle) follow in the stream; old NDArrayWrapper objects name companion .npy files."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from scanner.formats.pickle_values import Call, Global, Unknown, const, render

if TYPE_CHECKING:
    from scanner.formats.pickle_machine import Machine

WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
COMPAT_WRAPPERS = ("joblib.numpy_pickle_compat.NDArrayWrapper", "joblib.numpy_pickle_compat.ZNDArrayWrapper")
_CONSTRUCTORS = ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__")
_DESCR = re.compile(r"[<>|=]?([a-zA-Z])(\d*)(?:\[\w+\])?")
_FIXED_KINDS = {"b": 1, "?": 1}


def instance_class(inst: Call) -> str | None:
    """The class an instance-producing call builds (NEWOBJ / INST / OBJ / copyreg trampolines)."""
    func = inst.func
    if isinstance(func, Global) and func.full in _CONSTRUCTORS and isinstance(inst.args, tuple) and inst.args:
        func = inst.args[0]
    return func.full if isinstance(func, Global) else None


def after_build(m: Machine, inst: Call) -> None:
    cls = instance_class(inst)
    if cls == WRAPPER:
        _skip_array(m, inst)
    elif cls in COMPAT_WRAPPERS:
        _companion(m, inst)


def _fail(m: Machine, message: str, evidence: str) -> None:
    from scanner.formats.pickle_machine import Stop

    m.emit("PICKLE-JOBLIB-ARRAY", message, evidence=evidence, key="array")
    raise Stop("joblib array data cannot be delimited; the rest of the stream is not analyzed")


def _skip_array(m: Machine, inst: Call) -> None:
    from scanner.formats.pickle_machine import Machine, Stop

    state = inst.state if isinstance(inst.state, dict) else {}
    shape = const(state.get("shape"))
    info = dtype_info(state.get("dtype"))
    if info is None:
        _fail(m, "joblib NumpyArrayWrapper has a dtype whose item size cannot be derived",
              render(state.get("dtype"), 200))
        return
    if not isinstance(shape, tuple) or not all(type(x) is int and x >= 0 for x in shape):
        _fail(m, "joblib NumpyArrayWrapper has no valid shape", render(shape, 200))
        return
    itemsize, hasobject = info
    if m.frame_end is not None and m.pos != m.frame_end:
        m.emit("PICKLE-FRAME-MISMATCH", "joblib array data starts inside a FRAME (joblib commits the frame first)",
               evidence=f"array at {m.pos}, frame end {m.frame_end}", key="joblib")
    m.frame_end = None
    if hasobject:
        sub = Machine(m.data, m.src, m.ctx, m.classifier, m.counters, m.nested_depth, m.hooks)
        res = sub.run(m.pos, m.end)
        m.findings.extend(res.findings)
        m.globals.extend(res.globals)
        if not res.complete:
            raise Stop("nested object-array pickle is incomplete")
        m.pos = res.end
    else:
        count = 1
        for x in shape:
            count *= x
        pos = m.pos
        if state.get("numpy_array_alignment_bytes") is not None:
            if pos >= m.end:
                raise Stop("joblib alignment byte missing", truncated=True)
            pos += 1 + m.data[pos]
        size = count * itemsize
        if size > m.end - pos:
            m.emit("PICKLE-JOBLIB-ARRAY", f"joblib array of {count} x {itemsize} bytes runs past the end of the"
                   " stream", evidence=f"shape={shape} itemsize={itemsize} available={max(0, m.end - pos)}",
                   key="array")
            raise Stop("joblib array data truncated", truncated=True)
        m.pos = pos + size
    m.stack[-1] = Unknown("joblib array")


def dtype_info(dtype: object) -> tuple[int, bool] | None:
    """(itemsize, has objects) of a symbolic `numpy.dtype(descr, align, copy)` with its BUILD state."""
    if not isinstance(dtype, Call) or not isinstance(dtype.args, tuple) or not dtype.args:
        return None
    descr = const(dtype.args[0])
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    hasobject = False
    if len(state) >= 5:
        fields = state[4]
        if isinstance(fields, dict):
            for v in fields.values():
                sub = dtype_info(v[0]) if isinstance(v, tuple) and v else None
                if sub is None:
                    return None
                hasobject |= sub[1]
        sub_arr = state[2]
        if isinstance(sub_arr, tuple) and sub_arr:
            base = dtype_info(sub_arr[0])
            if base is None:
                return None
            hasobject |= base[1]
    if not isinstance(descr, str):
        return None
    mt = _DESCR.fullmatch(descr)
    if mt is None:
        return None
    kind, digits = mt.group(1), mt.group(2)
    if kind == "O":
        return 8, True
    elsize = state[5] if len(state) >= 6 and type(state[5]) is int else -1
    if elsize > 0:
        return elsize, hasobject
    if digits:
        n = int(digits)
        return (n * 4 if kind == "U" else n), hasobject
    if kind in _FIXED_KINDS:
        return _FIXED_KINDS[kind], hasobject
    return None


def _companion(m: Machine, inst: Call) -> None:
    state = inst.state if isinstance(inst.state, dict) else {}
    name = const(state.get("filename"))
    if not isinstance(name, str):
        m.emit("PICKLE-JOBLIB-ARRAY", "joblib NDArrayWrapper without a constant companion file name",
               evidence=render(state.get("filename"), 200), key="companion")
        return
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or len(parts) > 1:
        m.emit("PICKLE-JOBLIB-ARRAY", f"joblib NDArrayWrapper loads companion file {name!r} outside the model"
               " folder (path traversal)", evidence=name, key="companion")
    m.stack[-1] = Unknown(f"joblib companion array {name}")

"""joblib's array side channel, read the way joblib.numpy_pickle.NumpyUnpickler reads it.

After BUILD of a NumpyArrayWrapper, joblib reads raw array bytes (object dtypes: a nested pickle) from the
file; plain `pickle.load` / `torch.load` read the same bytes as opcodes. So the stream is analyzed both ways:
the joblib reading skips the array, and from the first skip a plain continuation of the machine reads on
as the other loaders do. Old NDArrayWrapper objects make joblib `np.load(..., allow_pickle=True)` a
companion file next to the pickle: that file is scanned too (docs/soundness-pickle-containers.md)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.findings import Severity
from scanner.formats.pickle.values import Call, Global, Unknown, const, render
from scanner.record import replace

if TYPE_CHECKING:
    from scanner.formats.pickle.machine import Machine

# joblib's classes, and the copies vendored as sklearn.externals.joblib (scikit-learn <= 0.22), whose own
# NumpyUnpickler treats them the same way
_JOBLIB = ("joblib", "sklearn.externals.joblib")
WRAPPERS = frozenset(f"{p}.numpy_pickle.NumpyArrayWrapper" for p in _JOBLIB)
ZCOMPAT_WRAPPERS = frozenset(f"{p}.numpy_pickle_compat.ZNDArrayWrapper" for p in _JOBLIB)
COMPAT_WRAPPERS = frozenset(f"{p}.numpy_pickle_compat.NDArrayWrapper" for p in _JOBLIB) | ZCOMPAT_WRAPPERS
_ALL_WRAPPERS = WRAPPERS | COMPAT_WRAPPERS
# constructions that run only cls.__new__ (+ BUILD): the wrapper's attributes are exactly the BUILD state
_CONSTRUCTORS = ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__")
_NEW_KINDS = frozenset({"NEWOBJ", "NEWOBJ_EX"})
# callables whose result is never an exact `str`, read from NumPy's source: `_reconstruct` returns
# `ndarray.__new__(subtype, ...)` (numpy/_core/src/multiarray/multiarraymodule.c `array__reconstruct`),
# `dtype(...)` a dtype; `scalar` is left out (for an object dtype it returns its argument)
_NON_STR_RESULTS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.dtype",
    "numpy.ndarray",
})
# numpy.dtype as pickled by numpy (dtype.__reduce__), every spelling numpy has used for the class
_DTYPE_CLASSES = frozenset({"numpy.dtype", "numpy.core.multiarray.dtype", "numpy._core.multiarray.dtype"})
_STRINGDTYPE = frozenset({"numpy._core._internal._convert_to_stringdtype_kwargs",
                          "numpy.core._internal._convert_to_stringdtype_kwargs"})
_DESCR = re.compile(r"[<>|=]?([a-zA-Z?])(\d*)")
_FLEXIBLE = frozenset("SUVa")  # numpy's flexible kinds: dtype.__setstate__ takes their elsize from the state
_SIZED = frozenset("iufcbMmO")  # kind letter + item size in bytes
# one-letter type codes (numpy.sctypeDict on LP64 Linux): the item size np.dtype(code) gives
_CODES = {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8, "p": 8,
          "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32, "O": 8, "M": 8, "m": 8}
_NPY_ITEM_HASOBJECT = 0x01
_ERROR_RULES = frozenset({"PICKLE-MALFORMED"})  # the plain loader raises there: nothing after it runs


class PlainHooks:
    """The machine's hooks for a stream read by a plain pickle Unpickler: joblib's BUILD is not special."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner.inner if isinstance(inner, PlainHooks) else inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def after_build(self, m: Machine, inst: Call) -> None:
        return None


def instance_class(inst: Call) -> str | None:
    """The class an instance-producing call builds (NEWOBJ / INST / OBJ / copyreg trampolines)."""
    func = inst.func
    if isinstance(func, Global) and func.full in _CONSTRUCTORS and isinstance(inst.args, tuple) and inst.args:
        func = inst.args[0]
    return func.full if isinstance(func, Global) else None


def _new_only(inst: Call) -> bool:
    """Built by `cls.__new__` alone (NEWOBJ, copyreg trampolines): no `__init__` set other attributes."""
    func = inst.func
    return inst.kind in _NEW_KINDS or (isinstance(func, Global) and func.full in _CONSTRUCTORS)


def after_build(m: Machine, inst: Call) -> None:
    if isinstance(m.hooks, PlainHooks):
        return  # pickle.load / torch.load / joblib's nested Unpickler: BUILD only sets the state
    cls = instance_class(inst)
    if cls in WRAPPERS:
        _skip_array(m, inst)
    elif cls in COMPAT_WRAPPERS:
        _companion(m, inst, cls)
    elif not _ALL_WRAPPERS.isdisjoint(m.seen) and _carries_wrapper(inst):
        # joblib tests isinstance(stack top, wrapper) after every BUILD: a call that may hand back a wrapper
        # (copy.copy(w), getitem([w], 0), object.__new__(W) ...) could make it read array bytes we cannot size
        _fail(m, "an object built from a joblib array wrapper gets BUILD: joblib may read array data here",
              render(inst, 200))


def _carries_wrapper(inst: Call, budget: int = 4096) -> bool:
    """A wrapper class or instance among the callee and arguments (bounded; past the bound: assume so)."""
    todo: list[object] = [inst.func, inst.args, inst.kwargs]
    while todo and budget > 0:
        budget -= 1
        v = todo.pop()
        if isinstance(v, Global):
            if v.full in _ALL_WRAPPERS:
                return True
        elif isinstance(v, Call):
            if instance_class(v) in _ALL_WRAPPERS:
                return True
            todo.extend((v.func, v.args, v.kwargs))
        elif type(v) in (tuple, list):
            todo.extend(v)  # type: ignore[arg-type]
        elif type(v) is dict:
            todo.extend(v.keys())  # type: ignore[union-attr]
            todo.extend(v.values())  # type: ignore[union-attr]
    return budget <= 0


def _fail(m: Machine, message: str, evidence: str) -> None:
    from scanner.formats.pickle.machine import Stop

    m.emit("PICKLE-JOBLIB-ARRAY", message, evidence=evidence, key="array")
    _plain_continuation(m)
    raise Stop("joblib array data cannot be delimited; the rest of the stream is not analyzed")


def _plain_continuation(m: Machine) -> None:
    """From the first joblib array of a stream on, read the bytes as plain pickle.load / torch.load do:
    a clone of the machine continues at the array bytes as opcodes. What it finds is reported; the error
    where such a loader gives up is not (nothing after it runs)."""
    from scanner.formats.pickle.machine import Machine

    if getattr(m, "_joblib_plain_done", False):
        return
    m._joblib_plain_done = True  # type: ignore[attr-defined]
    sub = Machine(m.data, m.src, m.ctx, m.classifier, m.counters, m.nested_depth, PlainHooks(m.hooks))
    sub.stack = list(m.stack)
    sub.marks = list(m.marks)
    sub.memo = dict(m.memo)
    sub.proto = m.proto
    sub.frame_end = m.frame_end
    sub.index = m.index
    _loader_type_errors(sub)
    res = sub.run(m.pos, m.end)
    have = {(f.rule_id, f.message, f.location) for f in m.findings}
    garbage = _recombined(m, sub) | _unheard_of(m, sub)
    for f in res.findings:
        if sub.error is not None and f.rule_id in _ERROR_RULES:
            continue
        if (f.rule_id, f.message, f.location) in have:
            continue
        if f.rule_id == "PICKLE-UNKNOWN-GLOBAL" and any(f.message.startswith((f"imports {g}", f"calls {g}"))
                                                        for g in garbage):
            f = replace(f, severity=Severity.INFO, message="plain pickle.load reading of joblib array bytes "
                        "(module and name only recombine allowed globals' parts: the loader fails there unless"
                        f" that module defines that name): {f.message}")
        m.findings.append(f)
    m.globals.extend(res.globals)


def _loader_type_errors(sub: Machine) -> None:
    """Read plainly, honest joblib data hands STACK_GLOBAL the objects the outer stream built (an estimator
    where a module name should be). The C unpickler raises `STACK_GLOBAL requires str` there, so the plain
    reading stops too - for an instance NEWOBJ / copyreg built of a class that is not a kind of str."""
    from scanner.formats.pickle.machine import Stop

    popped: list[object] = []
    pop, emit = sub._pop, sub.emit

    def _pop() -> object:
        v = pop()
        popped.append(v)
        del popped[:-2]
        return v

    def _emit(rule: str, message: str, **kw: Any) -> None:
        if rule == "PICKLE-UNRESOLVED-GLOBAL":
            bad = next((v for v in popped if _surely_not_str(v, sub)), None)
            if bad is not None:
                raise Stop(f"STACK_GLOBAL requires str, got {render(bad, 120)}")
        emit(rule, message, **kw)

    sub._pop = _pop  # type: ignore[method-assign]
    sub.emit = _emit  # type: ignore[method-assign]


def _surely_not_str(v: object, m: Machine) -> bool:
    if isinstance(v, Global):
        # an allowed name is a class or function (generated policies list only those; the hand list is
        # checked by a test), never an exact str
        return v.full in _ALL_WRAPPERS or v.full in _NON_STR_RESULTS or (
            m.classifier is not None and m.decide(v).status == "allow")
    if not isinstance(v, Call):
        return False
    if v.kind == "REDUCE" and isinstance(v.func, Global) and v.func.full in _NON_STR_RESULTS:
        return True
    if not _new_only(v):
        return False
    cls = instance_class(v)
    if cls is None:
        return False
    leaf = cls.rsplit(".", 1)[-1].lower()
    return not any(w in leaf for w in ("str", "unicode", "text", "bytes"))


def _popular(rules: Any) -> frozenset[str]:
    import json

    from scanner.rules import POPULAR_MODULES, rules_dir

    try:
        doc = json.loads(((rules.directory or rules_dir()) / POPULAR_MODULES).read_bytes())
        return frozenset(str(n) for n in doc["names"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()  # no list: nothing is excused this way


def _unheard_of(m: Machine, sub: Machine) -> set[str]:
    """Unknown globals of the plain reading whose top-level module no installation plausibly has: not the
    standard library, not named by the policy tables or the generated class policies, and not the import
    name of any of the 15,000 most downloaded PyPI distributions (rules/generated/popular-modules.json).
    Honest joblib data read plainly imports names such as `categories.dtype` (a state key of the outer
    memo); the loader fails there with ModuleNotFoundError. Without the list nothing is excused."""
    rules = getattr(m.classifier, "_rules", None)
    if rules is None:
        return set()
    popular = rules.cached("popular-modules", lambda: _popular(rules))
    if not popular:
        return set()
    t = m.classifier.t  # type: ignore[union-attr]
    known = rules.cached("pickle-table-tops", lambda: frozenset(
        n.split(".", 1)[0] for n in (*t.allow, *t.deny)))
    from scanner.formats.pickle.policy import generated

    out = set()
    for full, seen in sub.seen.items():
        if seen.decision.status != "unknown":
            continue
        top = full.split(".", 1)[0]
        if (top in sys.stdlib_module_names or top in known or top.lower() in popular
                or generated(rules).covers(top)):
            continue
        out.add(full)
        out.add(seen.decision.name)
    return out


def _recombined(m: Machine, sub: Machine) -> set[str]:
    """Unknown globals of the plain reading that only recombine the names of globals the joblib reading
    allowed. Read plainly, honest joblib data (a nested object-array pickle meets the outer memo: MEMOIZE
    indexes shift) imports names such as `NumpyArrayWrapper.dtype` or `joblib.numpy_pickle.dtype`: module
    and name are both parts of allowed globals, and the loader fails there (ModuleNotFoundError,
    AttributeError). A module or name the allowed globals do not spell keeps its full severity, so a payload
    in array bytes cannot reach a module of its choosing this way. Kept visible as info, never dropped."""
    modules: set[str] = set()
    leaves: set[str] = set()
    for module, name in m.globals:
        seen = m.seen.get(f"{module}.{name}" if name else module)
        if seen is None or seen.decision.status != "allow" or not name:
            continue
        modules.add(module)
        leaves.add(name.rsplit(".", 1)[-1])
    out = set()
    for module, name in sub.globals:
        full = f"{module}.{name}" if name else module
        seen = sub.seen.get(full)
        if seen is None or seen.decision.status != "unknown":
            continue
        if (module in modules or module in leaves) and name and all(p in leaves for p in name.split(".")):
            out.add(full)
            out.add(seen.decision.name)
    return out


def _skip_array(m: Machine, inst: Call) -> None:
    from scanner.formats.pickle.machine import Machine, Stop

    if not _new_only(inst):
        _fail(m, "joblib NumpyArrayWrapper built by calling the class (its __init__ sets attributes the"
              " state does not show)", render(inst, 200))
        return
    state = inst.state if isinstance(inst.state, dict) else {}
    shape = const(state.get("shape"))
    info = dtype_info(state.get("dtype"))
    if info is None:
        _fail(m, "joblib NumpyArrayWrapper has a dtype whose item size or object flag cannot be derived",
              render(state.get("dtype"), 200))
        return
    if not isinstance(shape, tuple) or not all(type(x) is int and x >= 0 for x in shape):
        _fail(m, "joblib NumpyArrayWrapper has no valid shape", render(shape, 200))
        return
    align = const(state.get("numpy_array_alignment_bytes"))
    if "numpy_array_alignment_bytes" in state and align is not None and type(align) is not int:
        _fail(m, "joblib NumpyArrayWrapper has an alignment that is not a constant", render(align, 200))
        return
    itemsize, hasobject = info
    _plain_continuation(m)
    if m.frame_end is not None and m.pos != m.frame_end:
        m.emit("PICKLE-FRAME-MISMATCH", "joblib array data starts inside a FRAME (joblib commits the frame first)",
               evidence=f"array at {m.pos}, frame end {m.frame_end}", key="joblib")
    m.frame_end = None
    if hasobject:
        # read_array: a fresh plain Unpickler on the same file (find_class shared): no joblib BUILD there
        sub = Machine(m.data, m.src, m.ctx, m.classifier, m.counters, m.nested_depth, PlainHooks(m.hooks))
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
        if align is not None:
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
    """(itemsize, hasobject) numpy gives a pickled dtype: `numpy.dtype(descr, align, copy)` then
    `dtype.__setstate__(state)` (numpy/_core/src/multiarray/descriptor.c arraydescr_setstate). For state
    versions 3 and 4 hasobject is the flags field alone (`flags & NPY_ITEM_HASOBJECT`), whatever the fields
    or subarray say; flexible kinds (S, U, V) take the item size from the state's elsize. Anything else is
    None: the caller cannot delimit the array."""
    if not isinstance(dtype, Call) or not isinstance(dtype.func, Global):
        return None
    if dtype.func.full in _STRINGDTYPE:
        return 16, True  # StringDType: 16-byte packed strings, flags carry NPY_ITEM_HASOBJECT
    if dtype.func.full not in _DTYPE_CLASSES or not isinstance(dtype.args, tuple) or not dtype.args:
        return None
    descr = const(dtype.args[0])
    if not isinstance(descr, str):
        return None
    mt = _DESCR.fullmatch(descr)
    if mt is None:
        return None
    kind, digits = mt.group(1), mt.group(2)
    if digits and kind in _SIZED:
        itemsize = int(digits)
    elif digits and kind in _FLEXIBLE:
        itemsize = int(digits) * (4 if kind == "U" else 1)
    elif not digits and kind in _CODES:
        itemsize = _CODES[kind]
    elif not digits and kind in _FLEXIBLE:
        itemsize = 0
    else:
        return None
    hasobject = kind == "O"
    state = dtype.state
    if state is None:
        return itemsize, hasobject  # no BUILD: what np.dtype(descr) gives
    if not isinstance(state, tuple) or len(state) not in (8, 9) or const(state[0]) not in (3, 4):
        return None  # older state versions recompute the flags from the fields: not modelled
    flags, elsize = const(state[7]), const(state[5])
    if type(flags) is not int or type(elsize) is not int:
        return None
    if kind in _FLEXIBLE:
        if elsize < 0:
            return None
        itemsize = elsize
    return itemsize, bool(flags & _NPY_ITEM_HASOBJECT)


# what joblib.load decompresses itself (joblib/compressor.py prefixes, numpy_pickle_compat's ZF header)
_JOBLIB_COMPRESSED = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00", b"\x04\x22\x4d\x18", b"ZF0x")


def _pickle_file(src: Any) -> Path | None:
    """The file joblib.load was given for this pickle: the file itself, or a file joblib decompresses whole
    (one level, no container). Its folder is where NumpyUnpickler._dirname points."""
    if src is None:
        return None
    if src.path is not None:
        return Path(src.path)
    if not src.member or "!" in src.member or not re.match(r"<[a-z0-9-]+>", src.member):
        return None  # archive.py names a whole decompressed stream "<fmt>name"
    top = Path(src.display)
    try:
        with open(top, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return None
    return top if head.startswith(_JOBLIB_COMPRESSED) else None


def _companion(m: Machine, inst: Call, cls: str) -> None:
    """NDArrayWrapper.read: np.load(os.path.join(dirname(pickle), filename), allow_pickle=True) - the
    companion is opened and may be unpickled. ZNDArrayWrapper.read: the companion is zlib data set as the
    array's raw state (no unpickling), but still a file the loader opens."""
    state = inst.state if isinstance(inst.state, dict) else {}
    name = const(state.get("filename"))
    m.stack[-1] = Unknown("joblib companion array")
    if not _new_only(inst) or not isinstance(name, str):
        m.emit("PICKLE-JOBLIB-ARRAY", "joblib NDArrayWrapper without a constant companion file name",
               evidence=render(state.get("filename"), 200), key="companion")
        return
    parts = re.split(r"[\\/]", name)
    if (not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts
            or "\x00" in name):
        m.emit("PICKLE-JOBLIB-ARRAY", f"joblib NDArrayWrapper loads companion file {name!r} outside the model"
               " folder (path traversal)", evidence=name, key="companion")
        return
    if cls in ZCOMPAT_WRAPPERS:
        return  # read_zfile + ndarray.__setstate__ of raw bytes: opened, never unpickled
    src, ctx = m.src, m.ctx
    path = _pickle_file(src)
    if path is None or ctx is None:
        m.emit("PICKLE-JOBLIB-ARRAY", f"joblib NDArrayWrapper loads companion file {name!r} next to a pickle that"
               " is not a file on disk: the companion is not scanned", evidence=name, key="companion")
        return
    target = Path(os.path.join(os.path.dirname(path), name))
    try:
        st = target.lstat()
        through_link = any(p.is_symlink() for p in [target, *target.parents][:len(parts)])
    except OSError:
        st, through_link = None, False
    if st is None:
        m.emit("PICKLE-JOBLIB-ARRAY", f"joblib NDArrayWrapper loads companion file {name!r}, which is missing:"
               " whatever is put there is loaded with allow_pickle=True", evidence=name, key="companion")
        return
    import stat as _stat

    if through_link or not _stat.S_ISREG(st.st_mode):
        m.emit("PICKLE-JOBLIB-ARRAY", f"joblib NDArrayWrapper loads companion file {name!r}, which is a link or"
               " not a regular file: not followed, not scanned", evidence=name, key="companion")
        return
    from scanner.source import FileSource

    child = FileSource(target, display=str(target))
    try:
        inner = ctx.scan_child(child)
    finally:
        child.close()
    m.findings.extend(inner)

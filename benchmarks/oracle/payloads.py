"""Generated hostile pickles: dangerous callables of the deny list reached through every import and call
form, bare and inside the wrappers loaders unwrap (npy object arrays, torch zips, joblib compressors).

Bytes are assembled opcode by opcode (nothing here pickles a live object), so the same seed gives the same
files on every machine.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator

# (module, name, args): each call makes an audit event when a loader runs it
GADGETS: list[tuple[str, str, tuple]] = [
    ("os", "system", ("true",)), ("posix", "system", ("true",)), ("os", "popen", ("true",)),
    ("subprocess", "Popen", (["true"],)), ("subprocess", "check_output", (["true"],)),
    ("subprocess", "run", (["true"],)), ("subprocess", "getoutput", ("true",)),
    ("os", "execv", ("/bin/true", ["true"])), ("os", "spawnv", (0, "/bin/true", ["true"])),
    ("pty", "spawn", ("true",)), ("builtins", "eval", ("__import__('os').system('true')",)),
    ("builtins", "exec", ("import os; os.system('true')",)),
    ("builtins", "compile", ("1", "<x>", "eval")),
    ("builtins", "open", ("/tmp/modelseal-oracle-canary", "w")),
    ("io", "open", ("/tmp/modelseal-oracle-canary", "w")), ("_io", "open", ("/etc/passwd", "r")),
    ("os", "remove", ("/tmp/modelseal-oracle-canary",)), ("os", "mkdir", ("/tmp/modelseal-oracle-dir",)),
    ("shutil", "rmtree", ("/tmp/modelseal-oracle-dir",)), ("os", "listdir", ("/",)),
    ("socket", "create_connection", (("127.0.0.1", 9),)), ("urllib.request", "urlopen", ("http://127.0.0.1:9",)),
    ("webbrowser", "open", ("http://127.0.0.1:9",)), ("pydoc", "pipepager", ("x", "true")),
    ("importlib", "import_module", ("antigravity",)), ("builtins", "__import__", ("this",)),
    ("runpy", "run_path", ("/etc/hostname",)), ("os", "putenv", ("LD_PRELOAD", "x")),
    ("code", "InteractiveInterpreter", ()), ("ctypes", "CDLL", ("libc.so.6",)),
    ("tempfile", "mkdtemp", ()), ("sqlite3", "connect", ("/tmp/modelseal-oracle.db",)),
]


# ------------------------------------------------------------------------------------------ opcode writer

def _str(s: str, proto: int) -> bytes:
    b = s.encode()
    if proto >= 4 and len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b  # SHORT_BINUNICODE
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def value(v: object, proto: int = 2) -> bytes:
    """Opcodes pushing a plain value (str, bytes, int, bool, None, tuple, list)."""
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        if 0 <= v < 256:
            return b"K" + bytes([v])
        return b"J" + struct.pack("<i", v)
    if isinstance(v, str):
        return _str(v, proto)
    if isinstance(v, bytes):
        return b"C" + bytes([len(v)]) + v if len(v) < 256 else b"B" + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        return b"(" + b"".join(value(x, proto) for x in v) + b"t"
    if isinstance(v, list):
        return b"(" + b"".join(value(x, proto) for x in v) + b"l"
    raise TypeError(type(v))


def _global(mod: str, name: str) -> bytes:
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def _stack_global(mod: str, name: str) -> bytes:
    return _str(mod, 4) + _str(name, 4) + b"\x93"


def _frame(body: bytes, proto: int) -> bytes:
    head = b"\x80" + bytes([proto])
    if proto >= 4:
        return head + b"\x95" + struct.pack("<Q", len(body) + 1) + body + b"."
    return head + body + b"."


def _p0_str(s: str) -> bytes:
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


FORMS: dict[str, Callable[[str, str, tuple], bytes]] = {}


def form(name: str):
    def deco(fn):
        FORMS[name] = fn
        return fn
    return deco


@form("global-reduce-p0")
def _f_p0(m, n, a):
    if not all(isinstance(x, str) for x in a):
        return _frame(_global(m, n) + value(a) + b"R", 2)
    return _global(m, n) + b"(" + b"".join(_p0_str(x) for x in a) + b"tR."


@form("global-reduce-p2")
def _f_p2(m, n, a):
    return _frame(_global(m, n) + value(a) + b"R", 2)


@form("stack-global-reduce-p4")
def _f_sg(m, n, a):
    return _frame(_stack_global(m, n) + value(a, 4) + b"R", 4)


@form("inst")
def _f_inst(m, n, a):
    return b"(" + b"".join(value(x) for x in a) + b"i" + m.encode() + b"\n" + n.encode() + b"\n."


@form("obj")
def _f_obj(m, n, a):
    return _frame(b"(" + _global(m, n) + b"".join(value(x) for x in a) + b"o", 2)


@form("newobj")
def _f_newobj(m, n, a):
    return _frame(_global(m, n) + value(a) + b"\x81", 2)


@form("newobj-ex")
def _f_newobj_ex(m, n, a):
    return _frame(_stack_global(m, n) + value(a, 4) + b"}" + b"\x92", 4)


@form("memo")
def _f_memo(m, n, a):  # the callable goes through the memo before it is called
    return _frame(_global(m, n) + b"q\x07" + b"0" + b"N0" + b"h\x07" + value(a) + b"R", 2)


@form("memo-p4")
def _f_memo4(m, n, a):
    return _frame(_stack_global(m, n) + b"\x94" + b"0" + b"h\x00" + value(a, 4) + b"R", 4)


@form("nested-in-ordereddict")
def _f_nested(m, n, a):  # an allowed constructor whose argument is the dangerous call
    inner = _global(m, n) + value(a) + b"R"
    return _frame(_global("collections", "OrderedDict") + b"(" + b"(" + b"(" + b"K\x01" + inner + b"t" + b"l" +
                  b"t" + b"R", 2)


@form("build-state")
def _f_build(m, n, a):  # the call sits in the state handed to an allowed class's BUILD
    inner = _global(m, n) + value(a) + b"R"
    return _frame(_global("collections", "OrderedDict") + b")R" + b"}" + _str("k", 2) + inner + b"s" + b"b", 2)


@form("setstate-reduce")
def _f_setstate(m, n, a):  # copyreg._reconstructor(object) then BUILD state with the call as a value
    obj = _global("copyreg", "_reconstructor") + b"(" + _global("builtins", "object") + _global("builtins", "object") \
        + b"Nt" + b"R"
    return _frame(obj + b"N}" + _str("x", 2) + _global(m, n) + value(a) + b"R" + b"s\x86" + b"b", 2)


@form("getattr-chain")
def _f_getattr(m, n, a):
    mod = _global("builtins", "__import__") + value((m,)) + b"R"
    if "." in m:
        mod = _global("importlib", "import_module") + value((m,)) + b"R"
    return _frame(_global("builtins", "getattr") + b"(" + mod + _str(n, 2) + b"tR" + value(a) + b"R", 2)


@form("second-pickle")
def _f_second(m, n, a):  # a benign first pickle, the payload in the one after it (joblib/torch read on)
    return _frame(value(0), 2) + _frame(_global(m, n) + value(a) + b"R", 2)


def payload_pickles() -> Iterator[tuple[str, bytes]]:
    for (m, n, a) in GADGETS:
        for fname, fn in FORMS.items():
            yield f"{m}.{n}/{fname}", fn(m, n, a)


# ------------------------------------------------------------------------------------------ wrappers

def npy_object(pkl: bytes, descr: str = "|O") -> bytes:
    header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (1,), }"
    pad = 64 - (10 + len(header) + 1) % 64
    h = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + pkl


def torch_zip(pkl: bytes, name: str = "archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", pkl)
        z.writestr(f"{name}/byteorder", "little")
        z.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def npz(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("arr_0.npy", npy_object(pkl))
    return buf.getvalue()


WRAPPERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "raw": (".pkl", lambda b: b),
    "npy-object": (".npy", npy_object),
    "torch-zip": (".pt", torch_zip),
    "npz": (".npz", npz),
    "joblib-zlib": (".joblib", lambda b: zlib.compress(b, 3)),
    "joblib-gzip": (".joblib", lambda b: gzip.compress(b, 3, mtime=0)),
    "joblib-bz2": (".joblib", lambda b: bz2.compress(b, 3)),
    "joblib-xz": (".joblib", lambda b: lzma.compress(b)),
}


def payloads() -> Iterator[tuple[str, bytes, str]]:
    """(origin, bytes, extension) of every gadget x form x wrapper, in a fixed order."""
    for origin, pkl in payload_pickles():
        for wname, (ext, wrap) in WRAPPERS.items():
            yield f"payload:{origin}/{wname}", wrap(pkl), ext

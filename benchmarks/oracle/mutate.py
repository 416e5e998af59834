"""Structure-aware mutations, deterministic for a seeded `random.Random`.

Each mutator takes (data, rng) and returns new bytes plus a short recipe, or None when the structure it
works on is absent. Parsing here is byte-level (pickletools.genops reads opcodes without running them).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import pickletools
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable

from benchmarks.oracle import payloads

Mutator = Callable[[bytes, random.Random], "tuple[bytes, str] | None"]
MUTATORS: dict[str, Mutator] = {}
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2, 4, 8, 64]


def mutator(name: str):
    def deco(fn):
        MUTATORS[name] = fn
        return fn
    return deco


@functools.lru_cache(maxsize=1)
def _payload_list() -> list[tuple[str, bytes, str]]:
    return list(payloads.payloads())


@functools.lru_cache(maxsize=1)
def _raw_payloads() -> list[bytes]:
    """The bare payload pickles (no npy/zip/compressor wrapper), for mutators that do the wrapping."""
    return [data for origin, data, _ext in _payload_list() if origin.endswith("/raw")]


def _gadget_call(rng: random.Random) -> bytes:
    m, n, a = rng.choice(payloads.GADGETS)
    return payloads._global(m, n) + payloads.value(a) + b"R"


# ------------------------------------------------------------------------------------------ generic bytes

@mutator("bitflip")
def _bitflip(data, rng):
    if not data:
        return None
    b = bytearray(data)
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b), f"bitflip@{i}"


@mutator("byte-set")
def _byteset(data, rng):
    if not data:
        return None
    b = bytearray(data)
    i = rng.randrange(min(len(b), 4096)) if rng.random() < 0.7 else rng.randrange(len(b))
    b[i] = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
    return bytes(b), f"byte@{i}"


@mutator("int-field")
def _intfield(data, rng):
    if len(data) < 8:
        return None
    i = rng.randrange(min(len(data) - 4, 8192))
    width, fmt = rng.choice([(2, "<H"), (4, "<I"), (8, "<Q")])
    if i + width > len(data):
        return None
    v = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
    return data[:i] + struct.pack(fmt, v) + data[i + width:], f"int{width * 8}@{i}={v}"


@mutator("chunk")
def _chunk(data, rng):
    if len(data) < 4:
        return None
    i = rng.randrange(len(data))
    j = min(len(data), i + rng.randrange(1, 64))
    op = rng.choice(["del", "dup", "trunc"])
    if op == "del":
        return data[:i] + data[j:], f"del[{i}:{j}]"
    if op == "dup":
        return data[:j] + data[i:j] + data[j:], f"dup[{i}:{j}]"
    return data[:i], f"trunc@{i}"


# ------------------------------------------------------------------------------------------ pickle

def _ops(data: bytes, limit: int = 4000) -> list[tuple[int, int, str]]:
    """(start, end, opcode name) of the first pickle's opcodes; empty when the bytes are no pickle."""
    out: list[tuple[int, int, str]] = []
    try:
        prev = None
        for op, _arg, pos in pickletools.genops(io.BytesIO(data)):
            if prev is not None:
                out[-1] = (out[-1][0], pos, out[-1][2])
            out.append((pos, pos + 1, op.name))
            prev = pos
            if op.name == "STOP" or len(out) >= limit:
                break
    except Exception:  # noqa: BLE001 - any unparsable rest ends the opcode list
        pass
    if out and out[-1][2] == "STOP":
        out[-1] = (out[-1][0], out[-1][0] + 1, "STOP")
    return out if len(out) >= 2 else []


def _pickle_start(data: bytes) -> int | None:
    """Offset of a pickle in the bytes: at 0, after an npy header, or the first PROTO opcode."""
    if data[:1] == b"\x80" or data[:1] in b"(c]}KN":
        return 0
    if data.startswith(b"\x93NUMPY") and len(data) > 10:
        hl = struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
        return (10 if data[6] == 1 else 12) + hl
    i = data.find(b"\x80\x02")
    return i if i >= 0 else None


@mutator("pickle-opcode")
def _pickle_op(data, rng):
    start = _pickle_start(data)
    if start is None:
        return None
    ops = _ops(data[start:])
    if not ops:
        return None
    body = data[start:]
    k = rng.randrange(len(ops))
    a, b, name = ops[k]
    choice = rng.choice(["delete", "dup", "swap", "insert-call", "insert-call-pop", "frame-len", "proto"])
    if choice == "delete" and name not in ("PROTO",):
        new = body[:a] + body[b:]
    elif choice == "dup":
        new = body[:b] + body[a:b] + body[b:]
    elif choice == "swap" and k + 1 < len(ops):
        a2, b2, _ = ops[k + 1]
        new = body[:a] + body[a2:b2] + body[a:b] + body[b2:]
    elif choice == "insert-call":  # the call's result is left for whatever the next op consumes
        new = body[:a] + _gadget_call(rng) + body[a:]
    elif choice == "insert-call-pop":
        new = body[:a] + _gadget_call(rng) + b"0" + body[a:]
    elif choice == "frame-len":
        frames = [o for o in ops if o[2] == "FRAME"]
        if not frames:
            return None
        fa = frames[0][0]
        v = rng.choice([0, 1, 8, 9, len(body), 0xFFFFFFFF])
        new = body[:fa + 1] + struct.pack("<Q", v) + body[fa + 9:]
    elif choice == "proto" and body[:1] == b"\x80":
        new = b"\x80" + bytes([rng.choice([0, 1, 2, 3, 4, 5, 6])]) + body[2:]
    else:
        return None
    return data[:start] + new, f"pickle-{choice}@{start + a}:{name}"


@mutator("pickle-append")
def _pickle_append(data, rng):  # a second pickle after the first (joblib, torch legacy read several)
    start = _pickle_start(data)
    if start is None:
        return None
    return data + payloads._frame(_gadget_call(rng), 2), "pickle-append"


# ------------------------------------------------------------------------------------------ zip

def _zip_members(data: bytes) -> list[zipfile.ZipInfo] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.infolist()
    except Exception:  # noqa: BLE001
        return None


@mutator("zip-member")
def _zip_member(data, rng):
    """Rewrite the zip with one member replaced or added: a payload pickle, npy object array, etc."""
    infos = _zip_members(data)
    if not infos:
        return None
    target = rng.choice(infos)
    origin, pkl, _ext = rng.choice(_payload_list()[::37])  # a spread of forms and wrappers
    kind = rng.choice(["replace", "add-pkl", "add-npy", "rename-pkl"])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        prefix = infos[0].filename.split("/")[0]
        for i in infos:
            body = zin.read(i.filename) if i.file_size < (8 << 20) else b""
            name = i.filename
            if i is target and kind == "replace":
                body = pkl
            if i is target and kind == "rename-pkl":
                name = name + ".pkl"
            zi = zipfile.ZipInfo(name, i.date_time)
            zi.compress_type = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]) if rng.random() < 0.2 \
                else i.compress_type
            zout.writestr(zi, body)
        if kind == "add-pkl":
            zout.writestr(f"{prefix}/data/evil.pkl", pkl)
        elif kind == "add-npy":
            zout.writestr(f"{prefix}/evil.npy", payloads.npy_object(pkl))
    return out.getvalue(), f"zip-{kind}:{target.filename}<-{origin}"


@mutator("zip-header")
def _zip_header(data, rng):
    sigs = [(m.start(), m.group()) for m in re.finditer(b"PK\x03\x04|PK\x01\x02|PK\x05\x06", data)]
    if not sigs:
        return None
    pos, sig = rng.choice(sigs)
    fields = {b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)],
              b"PK\x01\x02": [(6, 2), (8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4)],
              b"PK\x05\x06": [(4, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]}[sig]
    off, width = rng.choice(fields)
    if pos + off + width > len(data):
        return None
    fmt = "<H" if width == 2 else "<I"
    v = rng.choice(INTERESTING + [0, 8, 12, 14, 93, 99]) & ((1 << (8 * width)) - 1)
    return data[:pos + off] + struct.pack(fmt, v) + data[pos + off + width:], f"zip-field@{pos + off}={v}"


@mutator("zip-prepend")
def _zip_prepend(data, rng):  # zipfile finds the archive from its end: bytes in front are tolerated
    if not data.startswith(b"PK"):
        return None
    _o, pkl, _e = rng.choice(_payload_list()[::53])
    return pkl + data, "zip-prepend-pickle"


# ------------------------------------------------------------------------------------------ tar

def _tar_checksum(h: bytearray) -> None:
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)


def _tar_headers(data: bytes, limit: int = 16) -> list[int]:
    """Offsets of the member headers tarfile would read: each block whose checksum holds (any magic: v7,
    GNU, ustar, pax), walked by the size fields from offset 0."""
    out: list[int] = []
    pos = 0
    while pos + 512 <= len(data) and len(out) < limit:
        h = data[pos:pos + 512]
        try:
            chk = int(h[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
            size = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            break
        if chk != sum(h[:148]) + 256 + sum(h[156:]):
            break
        out.append(pos)
        pos += 512 + (size + 511) // 512 * 512
    return out


TAR_MAGICS = {"v7": b"\0" * 8, "gnu": b"ustar  \0", "ustar": b"ustar\x0000", "odd": b"ustaR\x0000"}


@mutator("tar-header")
def _tar_header(data, rng):
    heads = _tar_headers(data)
    if not heads:
        return None
    pos = rng.choice(heads)
    h = bytearray(data[pos:pos + 512])
    op = rng.choice(["v7", "v7", "gnu", "typeflag", "size", "name", "mode"])
    if op == "v7":  # pre-POSIX: no magic, recognised by checksum alone (tarfile does)
        h[257:265] = TAR_MAGICS["v7"]
        h[265:500] = b"\0" * 235
    elif op == "gnu":
        h[257:265] = TAR_MAGICS["gnu"]
    elif op == "typeflag":
        h[156] = rng.choice(b"0\x0012567gxLKSV")
    elif op == "size":
        h[124:136] = b"%011o\0" % rng.choice([0, 1, 511, 512, len(data)])
    elif op == "mode":
        h[100:108] = rng.choice([b"0000644\0", b"\0" * 8, b"7777777\0"])
    else:
        h[0:100] = rng.choice([b"pickle", b"storages", b"tensors", b"sys_info", b"../x", b"./pickle"]).ljust(100, b"\0")
    _tar_checksum(h)
    return data[:pos] + bytes(h) + data[pos + 512:], f"tar-{op}@{pos}"


def _tar_member(name: str, body: bytes, magic: str) -> bytes:
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.size = len(body)
    ti.mtime = 0
    fmt = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}.get(magic, tarfile.USTAR_FORMAT)
    h = bytearray(ti.tobuf(fmt, "utf-8", "surrogateescape"))
    if magic in ("v7", "odd"):  # tarfile writes no v7 header: the magic goes, the checksum is redone
        last = len(h) - 512
        hh = bytearray(h[last:])
        hh[257:265] = TAR_MAGICS[magic]
        if magic == "v7":
            hh[265:500] = b"\0" * 235
        _tar_checksum(hh)
        h[last:] = hh
    return bytes(h) + body + b"\0" * (-len(body) % 512)


@mutator("tar-wrap")
def _tar_wrap(data, rng):
    """The bytes (or a payload) as members of a tar in every header format tarfile reads; torch's legacy
    loader opens such a tar and unpickles its sys_info/storages/tensors/pickle members."""
    magic = rng.choice(["v7", "v7", "gnu", "ustar", "pax", "odd"])
    body = data if _pickle_start(data) == 0 and rng.random() < 0.6 else rng.choice(_raw_payloads())
    benign = b"\x80\x02}q\x00."
    layout = rng.choice(["torch-pickle", "torch-storages", "torch-sys_info", "single"])
    if layout == "single":
        members = [(rng.choice(["data.pkl", "model", "x"]), body)]
    else:
        target = layout.split("-", 1)[1]
        members = [(n, body if n == target else (b"\x80\x02K\x00." if n in ("storages", "tensors") else benign))
                   for n in ("sys_info", "pickle", "storages", "tensors")]
    out = b"".join(_tar_member(n, b, magic) for n, b in members) + b"\0" * 1024
    return out, f"tar-{magic}-wrap:{layout}"


# ------------------------------------------------------------------------------------------ compressors

def _decompress(data: bytes) -> tuple[str, bytes] | None:
    for name, fn in (("zlib", zlib.decompress), ("gzip", gzip.decompress), ("bz2", bz2.decompress),
                     ("xz", lzma.decompress)):
        try:
            return name, fn(data)
        except Exception:  # noqa: BLE001
            continue
    return None


@mutator("compressor")
def _compressor(data, rng):
    got = _decompress(data[:1 << 22])
    if got is None:
        if _pickle_start(data) != 0:
            return None
        name, raw = "none", data
    else:
        name, raw = got
    if rng.random() < 0.5:
        raw = raw + payloads._frame(_gadget_call(rng), 2) if rng.random() < 0.5 else \
            payloads._frame(_gadget_call(rng), 2)
    how = rng.choice(["zlib", "zlib-wbits", "gzip-flags", "bz2", "xz", "lzma-alone"])
    if how == "zlib":
        out = zlib.compress(raw, rng.choice([0, 1, 6, 9]))
    elif how == "zlib-wbits":
        c = zlib.compressobj(rng.choice([1, 9]), zlib.DEFLATED, rng.choice([9, 10, 12, 15]))
        out = c.compress(raw) + c.flush()
    elif how == "gzip-flags":
        out = bytearray(gzip.compress(raw, 1, mtime=0))
        out[8] = rng.choice([0, 2, 4])
        out[9] = rng.choice([0, 3, 255])
        out = bytes(out)
    elif how == "bz2":
        out = bz2.compress(raw, rng.choice([1, 9]))
    elif how == "xz":
        out = lzma.compress(raw, lzma.FORMAT_XZ, check=rng.choice([lzma.CHECK_NONE, lzma.CHECK_CRC32]))
    else:
        out = lzma.compress(raw, lzma.FORMAT_ALONE)
    return out, f"compress:{name}->{how}"


# ------------------------------------------------------------------------------------------ numpy

@mutator("npy-header")
def _npy_header(data, rng):
    if not data.startswith(b"\x93NUMPY") or len(data) < 12:
        return None
    ver = data[6]
    hl = struct.unpack("<H", data[8:10])[0] if ver == 1 else struct.unpack("<I", data[8:12])[0]
    start = 10 if ver == 1 else 12
    header = data[start:start + hl].decode("latin1", "replace")
    body = data[start + hl:]
    descr = rng.choice(NPY_DESCRS)  # as written in a header: quoted, nested, dict forms
    op = rng.choice(["descr", "descr+payload", "fortran", "version", "shape"])
    if op in ("descr", "descr+payload"):
        header = re.sub(r"'descr':\s*(\"[^\"]*\"|'[^']*'|\[.*?\]\)?\]|\{.*?\})", f"'descr': {descr}", header, count=1)
        if op == "descr+payload":
            body = payloads._frame(_gadget_call(rng), 2)
    elif op == "fortran":
        header = header.replace("False", "True", 1) if "False" in header else header.replace("True", "False", 1)
    elif op == "shape":
        header = re.sub(r"'shape':\s*\([^)]*\)", f"'shape': {rng.choice(['()', '(1,)', '(0,)', '(2, 1)'])}",
                        header, count=1)
    h = header.rstrip(" \n")
    newver = rng.choice([1, 2, 3]) if op == "version" else ver
    pre = 10 if newver == 1 else 12
    pad = 64 - (pre + len(h) + 1) % 64
    hb = (h + " " * pad + "\n").encode("utf-8" if newver == 3 else "latin1", "replace")
    lenf = struct.pack("<H", len(hb)) if newver == 1 else struct.pack("<I", len(hb))
    return b"\x93NUMPY" + bytes([newver, 0]) + lenf + hb + body, f"npy-{op}:{descr}"


NPY_DESCRS = ["'|O'", "'O'", "'<O'", "'>O'", "'=O'", "'O8'", "'|O8'", "[('a', '|O')]", "[('a', '<f4'), ('b', 'O')]",
              "('O', (1,))", "('|O', ())", "[('a', '|O', (1,))]", "[('', '|O')]", "[(('t', 'a'), '|O')]",
              "{'names': ['a'], 'formats': ['O']}", "{'names': ['a'], 'formats': ['O'], 'offsets': [0]}",
              "[('a', [('b', 'O')])]", "('|V8', [('a', 'O')])", "[('a', '<i4'), ('b', ('O', (2,)))]",
              "'|V8'", "'<f4'", "'|u1'", "'|S1'", "[('a', '<i8')]"]


@mutator("npy-dtype")
def _npy_dtype(data, rng):
    """A pickle (the input's own, or a payload) as the body of an npy whose dtype state may hold objects:
    nested/structured/sub-array/titled/dict forms, every header version and order flag."""
    start = _pickle_start(data)
    if start is not None and data.startswith(b"\x93NUMPY"):
        body = data[start:]
    elif start == 0 and rng.random() < 0.6:
        body = data
    else:
        body = rng.choice(_raw_payloads())
    descr = rng.choice(NPY_DESCRS)
    shape = rng.choice(["()", "(1,)", "(2,)", "(1, 1)", "(0,)"])
    order = rng.choice(["False", "True"])
    ver = rng.choice([1, 1, 2, 3])
    keys = [f"'descr': {descr}", f"'fortran_order': {order}", f"'shape': {shape}"]
    rng.shuffle(keys)
    h = "{" + ", ".join(keys) + ", }"
    pre = 10 if ver == 1 else 12
    hb = (h + " " * (64 - (pre + len(h) + 1) % 64) + "\n").encode("latin1")
    lenf = struct.pack("<H", len(hb)) if ver == 1 else struct.pack("<I", len(hb))
    return b"\x93NUMPY" + bytes([ver, 0]) + lenf + hb + body, f"npy-dtype:v{ver}:{descr}"


# ------------------------------------------------------------------------------------------ templates

JINJA_SNIPPETS = [
    "{{ cycler.__init__.__globals__.os.system('true') }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('true').read() }}",
    "{{ lipsum.__globals__['os'].popen('true') }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c(['true']) }}{% endif %}{% endfor %}",
    "{{ joiner.__init__.__globals__.__builtins__.open('/tmp/modelseal-oracle-canary', 'w') }}",
    "{{ namespace.__init__.__globals__.os.system('true') }}",
]
CONTROL = ["\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\u2028", "\ufeff", "\r"]


@mutator("template")
def _template(data, rng):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "{" not in text and "_target_" not in text:
        return None
    op = rng.choice(["control", "snippet", "snippet+control"])
    pos = rng.randrange(len(text) + 1)
    snippet = rng.choice(JINJA_SNIPPETS)
    if text.lstrip().startswith("{") and '"chat_template"' in text:
        snippet = snippet.replace("\\", "\\\\").replace('"', '\\"')
        k = text.find('"chat_template"')
        q = text.find('"', text.find(":", k) + 1)
        pos = q + 1 if q > 0 else pos
    ins = ""
    if "control" in op:
        ins += rng.choice(CONTROL) if "\"chat_template\"" not in text else "\\u0000"
    if "snippet" in op:
        ins += snippet
    return (text[:pos] + ins + text[pos:]).encode("utf-8"), f"template-{op}@{pos}"


@mutator("hydra-target")
def _hydra(data, rng):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "_target_" not in text:
        return None
    # hydra blocklists os.system & co. itself; open/webbrowser/makedirs/sockets still run
    target = rng.choice(["os.system", "subprocess.Popen", "builtins.eval", "builtins.open", "io.open",
                         "webbrowser.open", "os.makedirs", "pathlib.Path.touch", "socket.create_connection"])
    new = re.sub(r"(_target_[\"']?\s*:\s*[\"']?)[A-Za-z0-9_.]+", lambda m: m.group(1) + target, text, count=1)
    return new.encode(), f"hydra-target:{target}"


def mutate(data: bytes, rng: random.Random, rounds: int = 1) -> tuple[bytes, str]:
    """Apply `rounds` applicable mutators; structure-aware ones are tried first when they apply."""
    recipe = []
    names = list(MUTATORS)
    for _ in range(rounds):
        for _try in range(8):
            name = rng.choice(names)
            try:
                got = MUTATORS[name](data, rng)
            except Exception:  # noqa: BLE001 - a structure the mutator cannot rewrite (encrypted zip...)
                got = None
            if got is not None:
                data, step = got
                recipe.append(step.replace(" ", ""))  # the recipe is one word (campaign.source_kind)
                break
    return data, "+".join(recipe) or "identity"

#!/usr/bin/env python3
"""Bomb families on the real CLI: wall time and peak RSS (sandbox child included) per family.

    python benchmarks/bench_bombs.py [--only NAME ...] [--scale 1.0] [--no-write]

Each bomb is generated in a temporary folder (streamed: the generator never holds the inflated size), then
`modelseal scan` runs on it in a subprocess measured by bench_measure (GNU time: the peak of the process
tree's largest member, which covers the forked HDF5 child). The table goes to benchmarks/RESULTS.md.
Targets: every family <= 5 s and <= 300 MB, with a finding (exit != 0).

The generators are also used by tests/test_bombs.py at tiny sizes.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import lzma
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1 << 20
GiB = 1 << 30
ZERO = bytes(MiB)
ORACLE = Path(os.environ.get("MODELSEAL_ORACLE", "/work/oracle/bin/python"))


# -- compressed zero streams ------------------------------------------------------------------------------

def _zeros_through(compress: Callable[[bytes], bytes], flush: Callable[[], bytes], n: int) -> bytes:
    out = io.BytesIO()
    left = n
    while left > 0:
        k = min(left, MiB)
        out.write(compress(ZERO[:k]))
        left -= k
    out.write(flush())
    return out.getvalue()


def zero_stream(kind: str, n: int) -> bytes:
    """`n` zero bytes compressed as gzip, bz2, xz, lzma (alone), zlib or lz4 (frame), streamed."""
    if kind in ("gzip", "zlib", "deflate"):
        c = zlib.compressobj(9, zlib.DEFLATED, {"gzip": 31, "zlib": 15, "deflate": -15}[kind])
        return _zeros_through(c.compress, c.flush, n)
    if kind == "bz2":
        b = bz2.BZ2Compressor(9)
        return _zeros_through(b.compress, b.flush, n)
    if kind in ("xz", "lzma"):
        x = lzma.LZMACompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE, preset=1)
        return _zeros_through(x.compress, x.flush, n)
    if kind == "lz4":
        import lz4.frame

        f = lz4.frame.LZ4FrameCompressor()
        head = f.begin()
        return head + _zeros_through(f.compress, f.flush, n)
    raise ValueError(kind)


# -- zip writing (hand-assembled: precompressed members, overlaps) -----------------------------------------

def _crc_zeros(n: int, crc: int = 0) -> int:
    left = n
    while left > 0:
        k = min(left, MiB)
        crc = zlib.crc32(ZERO[:k], crc)
        left -= k
    return crc


def _lfh(name: bytes, method: int, crc: int, csize: int, usize: int) -> bytes:
    return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, csize, usize, len(name), 0) + name


def _cdh(name: bytes, method: int, crc: int, csize: int, usize: int, offset: int) -> bytes:
    return struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, csize, usize,
                       len(name), 0, 0, 0, 0, 0, offset) + name


def _eocd(n: int, cd_size: int, cd_off: int) -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, cd_size, cd_off, 0)


def zip_of(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """members: (name, method, compressed data, crc, uncompressed size)."""
    body = io.BytesIO()
    cd = io.BytesIO()
    for name, method, data, crc, usize in members:
        off = body.tell()
        raw = name.encode()
        body.write(_lfh(raw, method, crc, len(data), usize))
        body.write(data)
        cd.write(_cdh(raw, method, crc, len(data), usize, off))
    cd_off = body.tell()
    return body.getvalue() + cd.getvalue() + _eocd(len(members), cd.tell(), cd_off)


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def nested_zip(levels: int, fanout: int, leaf_bytes: int) -> bytes:
    """42.zip-style: `fanout` deflated leaves of `leaf_bytes` zeros, zipped `levels` times `fanout`-fold."""
    leaf = zero_stream("deflate", leaf_bytes)
    crc = _crc_zeros(leaf_bytes)
    cur = zip_of([(f"{i:x}.bin", 8, leaf, crc, leaf_bytes) for i in range(fanout)])
    for _ in range(levels - 1):
        packed = deflate(cur)
        c = zlib.crc32(cur)
        cur = zip_of([(f"lib{i:x}.zip", 8, packed, c, len(cur)) for i in range(fanout)])
    return cur


def overlapping_zip(files: int, kernel_bytes: int) -> bytes:
    """David Fifield's "better zip bomb" (quoted overlap): every member's deflate stream quotes the next
    member's local header in a stored block and then runs into that member's data; all end in one kernel."""
    kernel = zero_stream("deflate", kernel_bytes)
    names = [f"{i:04d}".encode() for i in range(files)]
    # from the last member back: data_i = stored-block(LFH_{i+1}) + data_{i+1}
    csize, usize = len(kernel), kernel_bytes
    tail_crc_input: list[bytes] = []   # headers quoted, in file order, after member i
    headers: list[bytes] = [b""] * files
    crcs = [0] * files
    sizes: list[tuple[int, int]] = [(0, 0)] * files
    for i in range(files - 1, -1, -1):
        prefix = b"".join(tail_crc_input)
        crc = _crc_zeros(kernel_bytes, zlib.crc32(prefix))
        crcs[i], sizes[i] = crc, (csize, usize)
        headers[i] = _lfh(names[i], 8, crc, csize, usize)
        quote = b"\x00" + struct.pack("<HH", len(headers[i]), len(headers[i]) ^ 0xFFFF)  # non-final stored block
        tail_crc_input.insert(0, headers[i])
        csize += len(quote) + len(headers[i])
        usize += len(headers[i])
    body = io.BytesIO()
    offsets = []
    for i in range(files):
        offsets.append(body.tell())
        body.write(headers[i])
        if i + 1 < files:
            h = headers[i + 1]
            body.write(b"\x00" + struct.pack("<HH", len(h), len(h) ^ 0xFFFF))
    body.write(kernel)
    cd = b"".join(_cdh(names[i], 8, crcs[i], *sizes[i], offsets[i]) for i in range(files))
    cd_off = body.tell()
    return body.getvalue() + cd + _eocd(files, len(cd), cd_off)


def many_entry_zip(n: int) -> bytes:
    crc = zlib.crc32(b"")
    body = io.BytesIO()
    cd = io.BytesIO()
    for i in range(n):
        name = f"{i:x}".encode()
        off = body.tell()
        body.write(_lfh(name, 0, crc, 0, 0))
        cd.write(_cdh(name, 0, crc, 0, 0, off))
    cd_off = body.tell()
    return body.getvalue() + cd.getvalue() + _eocd(min(n, 0xFFFF), cd.tell(), cd_off)


def quine_zip() -> bytes:
    """A stored member whose data runs to the end of the file: it holds the directory that lists it, so the
    member opens as the archive again (each level one step smaller)."""
    name = b"r.zip"
    lfh_len = 30 + len(name)
    cd_len = 46 + len(name)
    total = lfh_len + cd_len + 22
    data_len = total - lfh_len
    crc = 0
    lfh = _lfh(name, 0, crc, data_len, data_len)
    cd = _cdh(name, 0, crc, data_len, data_len, 0)
    return lfh + cd + _eocd(1, cd_len, lfh_len)


def many_entry_targz(n: int) -> bytes:
    """A tar.gz of `n` empty regular files (headers hand-packed: tarfile is too slow for 10^6)."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = io.BytesIO()
    block = bytearray()
    for i in range(n):
        h = bytearray(512)
        name = f"f{i}".encode()
        h[0:len(name)] = name
        h[100:108] = b"0000644\x00"
        h[108:116] = h[116:124] = b"0000000\x00"
        h[124:136] = b"00000000000\x00"
        h[136:148] = b"00000000000\x00"
        h[148:156] = b" " * 8
        h[156:157] = b"0"
        h[257:263] = b"ustar\x00"
        h[263:265] = b"00"
        h[148:156] = b"%06o\x00 " % sum(h)
        block += h
        if len(block) >= MiB:
            out.write(c.compress(bytes(block)))
            block.clear()
    block += bytes(1024)
    out.write(c.compress(bytes(block)))
    out.write(c.flush())
    return out.getvalue()


def deep_gzip(levels: int) -> bytes:
    data = b"\x80\x04K\x01."  # a pickle of 1 at the bottom
    for _ in range(levels):
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = c.compress(data) + c.flush()
    return data


# -- pickles, templates, headers --------------------------------------------------------------------------

def pickle_marks(n: int) -> bytes:
    return b"\x80\x04" + b"(" * n + b"."


def pickle_memo_chain(n: int) -> bytes:
    # one string memoized, then fetched and re-memoized n times (MEMOIZE fills the memo)
    return b"\x80\x04\x8c\x01a\x94" + b"h\x00\x94" * n + b"."


def pickle_deep_lists(n: int) -> bytes:
    return b"\x80\x04" + b"](" * n + b"e" * n + b"."


def jinja_chain(n: int) -> bytes:
    tmpl = "{{ messages" + "|lower" * n + " }}"
    return json.dumps({"chat_template": tmpl, "tokenizer_class": "PreTrainedTokenizerFast"}).encode()


def jinja_nesting(n: int) -> bytes:
    tmpl = "{% if x %}" * n + "a" + "{% endif %}" * n
    return json.dumps({"chat_template": tmpl}).encode()


def gguf_huge_array(count: int = 1 << 60) -> bytes:
    key = b"tokenizer.ggml.tokens"
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    out += struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + struct.pack("<IQ", 8, count)
    return out + b"\x01\x00\x00\x00\x00\x00\x00\x00a" * 64


def safetensors_huge_header() -> bytes:
    return struct.pack("<Q", (1 << 60)) + b'{"a":' + b"[" * 64


def onnx_many_fields(n: int) -> bytes:
    from scanner.protowire import encode_varint as v

    nodes = b"\x0a\x00" * n                       # GraphProto.node: empty NodeProtos
    graph = v(7 << 3 | 2) + v(len(nodes)) + nodes
    return v(1 << 3 | 0) + v(8) + graph


def keras_mutated(path: Path) -> bool:
    """A .keras whose weights file has one attribute whose dataspace claims 2^33 elements (made with h5py in
    the oracle venv, then patched): HDF5 allocates the declared size when the attribute is read."""
    if not ORACLE.exists():
        return False
    code = r'''
import io, json, struct, sys, zipfile, h5py, numpy as np
buf = io.BytesIO()
with h5py.File(buf, "w") as f:
    f.create_group("layers").attrs.create("bomb", np.arange(4097, dtype=np.int64))
h5 = bytearray(buf.getvalue())
# dataspace message v1/v2 of rank 1 holds the dim 4097 as 8 little-endian bytes: make it 2^33
needle = struct.pack("<Q", 4097)
i = h5.find(needle)
h5[i:i + 8] = struct.pack("<Q", 1 << 33)
cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": []}, "module": "keras"}
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
    z.writestr("config.json", json.dumps(cfg))
    z.writestr("model.weights.h5", bytes(h5))
'''
    r = subprocess.run([str(ORACLE), "-c", code, str(path)], capture_output=True, timeout=120)
    return r.returncode == 0


def joblib_zeros(path: Path, n: int) -> bool:
    """joblib.dump(np.zeros(n // 8), compress=zlib) in the oracle venv (a real joblib file)."""
    if not ORACLE.exists():
        return False
    code = ("import sys, numpy as np, joblib; "
            "joblib.dump(np.zeros(int(sys.argv[2]) // 8), sys.argv[1], compress=('zlib', 3))")
    r = subprocess.run([str(ORACLE), "-c", code, str(path), str(n)], capture_output=True, timeout=600)
    return r.returncode == 0


def honest_npy_gz(path: Path, n: int) -> bool:
    """Not a bomb: a gzip of an .npy of `n` bytes of float32 noise (ratio ~1), written in steps. It must come
    out without ARCHIVE-BOMB or LIMIT-EXCEEDED (and exit 0)."""
    import gzip

    count = n // 4
    head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % count
    head = head.ljust(118) + b"\n"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head)
        left = count * 4
        while left > 0:
            k = min(left, 4 * MiB)
            fh.write(os.urandom(k))
            left -= k
    return True


# -- the families ----------------------------------------------------------------------------------------

def families(scale: float) -> list[tuple[str, str, Callable[[Path], bool]]]:
    """(family, file name, writer). `scale` shrinks the big sizes (1.0: the sizes of the issue)."""
    g = max(MiB, int(GiB * scale))

    def write(data_fn: Callable[[], bytes]) -> Callable[[Path], bool]:
        def w(p: Path) -> bool:
            p.write_bytes(data_fn())
            return True
        return w

    n6 = max(1000, int(1_000_000 * scale))
    return [
        ("honest: gzip of a 512 MiB .npy of noise", "weights.npy.gz", lambda p: honest_npy_gz(p, g // 2)),
        ("gzip of 1 GiB zeros", "weights.bin.gz", write(lambda: zero_stream("gzip", g))),
        ("bz2 of 1 GiB zeros", "weights.bin.bz2", write(lambda: zero_stream("bz2", g))),
        ("xz of 1 GiB zeros", "weights.bin.xz", write(lambda: zero_stream("xz", g))),
        ("lzma (alone) of 1 GiB zeros", "weights.bin.lzma", write(lambda: zero_stream("lzma", g))),
        ("lz4 frame of 1 GiB zeros", "weights.bin.lz4", write(lambda: zero_stream("lz4", g))),
        ("zlib of 1 GiB zeros", "weights.bin.z", write(lambda: zero_stream("zlib", g))),
        ("joblib zlib, 1 GiB array of zeros", "model.joblib", lambda p: joblib_zeros(p, g)),
        ("42-style nested zip (16^4 x 1 GiB)", "42.zip", write(lambda: nested_zip(4, 16, g))),
        ("overlapping zip entries (Fifield)", "overlap.zip", write(lambda: overlapping_zip(250, int(21 * MiB * scale) or MiB))),
        ("zip with 10^6 entries", "many.zip", write(lambda: many_entry_zip(n6))),
        ("tar.gz with 10^6 entries", "many.tar.gz", write(lambda: many_entry_targz(n6))),
        ("gzip nested 200 deep", "deep.gz", write(lambda: deep_gzip(200))),
        ("quine-ish zip (member = archive)", "r.zip", write(quine_zip)),
        ("pickle: 50 M MARKs", "marks.pkl", write(lambda: pickle_marks(int(50_000_000 * scale) or 1000))),
        ("pickle: 10 M memo chain", "memo.pkl", write(lambda: pickle_memo_chain(int(10_000_000 * scale) or 1000))),
        ("pickle: 5 M nested lists", "lists.pkl", write(lambda: pickle_deep_lists(int(5_000_000 * scale) or 1000))),
        ("jinja: 100k filter chain", "tokenizer_config.json", write(lambda: jinja_chain(100_000))),
        ("jinja: 50k nested ifs", "tokenizer_config.json", write(lambda: jinja_nesting(50_000))),
        ("keras: HDF5 attribute of 2^33 elements", "model.keras", keras_mutated),
        ("gguf: array of 2^60 items", "model.gguf", write(gguf_huge_array)),
        ("safetensors: header length 2^60", "model.safetensors", write(safetensors_huge_header)),
        ("onnx: 10^7 empty nodes", "model.onnx", write(lambda: onnx_many_fields(int(10_000_000 * scale) or 1000))),
    ]


def fuzz_child(examples: int) -> None:
    """Replay the property fuzz (tests/test_property_fuzz.py strategies and policy, plus default limits) and
    print the slowest inputs as JSON: this process's peak RSS is measured by the parent."""
    import time

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import test_property_fuzz as tp
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from scanner.rules import Policy

    times: list[tuple[float, str, int, str]] = []
    default = Policy()

    def timed(name: str, data: bytes) -> None:
        for label, pol in (("fuzz", tp.POLICY), ("default", default)):
            t = time.perf_counter()
            tp.scan_data(data, name, policy=pol, rules=tp.RULES)
            times.append((time.perf_counter() - t, name, len(data), label))

    common = settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)

    @common
    @given(tp.mutated())
    def mutated(case: tuple[str, bytes]) -> None:
        timed(*case)

    @common
    @given(st.sampled_from(tp.MAGICS), st.binary(max_size=2048))
    def magics(magic: bytes, tail: bytes) -> None:
        timed("random.bin", magic + tail)

    mutated()
    magics()
    times.sort(reverse=True)
    print(json.dumps({"inputs": len(times), "slowest": times[:5]}))


def fuzz(examples: int, timeout: float) -> list[str]:
    from bench_measure import run_measured

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    m = run_measured([sys.executable, str(Path(__file__).resolve()), "--fuzz-child", str(examples)], env=env,
                     timeout=timeout)
    try:
        doc = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [f"fuzz replay failed: {m.stderr.strip()[-300:]}"]
    slow = ", ".join(f"{t:.2f} s ({name}, {size} B, {pol} limits)" for t, name, size, pol in doc["slowest"][:3])
    return [f"Property-fuzz replay ({doc['inputs']} scans of {examples} mutated fixtures and {examples} random "
            f"tails, fuzz and default limits): slowest {slow}; whole run {m.wall_s:.0f} s, peak RSS "
            f"{m.peak_rss_mb:.0f} MB (HDF5 child included)."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of family names to run")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--fuzz", type=int, default=0, help="also replay the property fuzz with N examples each")
    ap.add_argument("--fuzz-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    if args.fuzz_child:
        fuzz_child(args.fuzz_child)
        return 0
    from bench_measure import replace_section, run_measured

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bombs-") as tmp:
        for i, (family, fname, writer) in enumerate(families(args.scale)):
            if args.only and not any(s.lower() in family.lower() for s in args.only):
                continue
            folder = Path(tmp) / f"{i:02d}"
            folder.mkdir()
            path = folder / fname
            if not writer(path):
                rows.append((family, "-", None, "skipped (no oracle venv)"))
                continue
            m = run_measured([sys.executable, "-m", "scanner.cli", "scan", "--format", "json", str(path)], env=env,
                             timeout=args.timeout, workdir=Path(tmp))
            rules = "timeout" if m.timed_out else _rules(m.stdout, m.stderr)
            rows.append((family, f"{path.stat().st_size:,}", m, rules))
            print(f"{family:45s} {path.stat().st_size:>13,} B {m.wall_s:7.2f} s {m.peak_rss_mb:8.1f} MB "
                  f"exit {m.returncode}  {rules}", flush=True)
            path.unlink()
    lines = ["## Bombs (benchmarks/bench_bombs.py)", "",
             "`modelseal scan` on each bomb family (generated at run time, streamed); peak RSS by GNU time covers "
             "the forked HDF5 child. Target: <= 5 s and <= 300 MB each, stopped with a finding.", "",
             "| family | file bytes | wall s | peak MB | exit | findings that stopped it |",
             "|---|---:|---:|---:|---:|---|"]
    for family, size, m, rules in rows:
        if m is None:
            lines.append(f"| {family} | {size} | - | - | - | {rules} |")
        else:
            lines.append(f"| {family} | {size} | {m.wall_s:.2f} | {m.peak_rss_mb:.0f} | {m.returncode} | {rules} |")
    lines.append("")
    if args.fuzz:
        lines.extend(fuzz(args.fuzz, args.timeout * 10))
        lines.append("")
    lines.append(f"Scale {args.scale}; machine: {os.cpu_count()} cores shared with other jobs.")
    section = "\n".join(lines) + "\n<!-- end bombs -->"
    print(section)
    if not args.no_write and not args.only:
        replace_section(HERE / "RESULTS.md", "## Bombs (benchmarks/bench_bombs.py)", "<!-- end bombs -->", section)
    return 0


def _rules(stdout: str, stderr: str) -> str:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return f"no JSON output: {stderr.strip()[-120:]!r}"
    seen: dict[str, str] = {}
    for f in doc.get("files", []):
        for x in f.get("findings", []):
            if x.get("severity") in ("medium", "high", "critical"):
                seen.setdefault(x.get("rule_id") or x.get("rule", "?"), x.get("severity"))
    keep = [r for r in seen if r.startswith(("ARCHIVE-BOMB", "LIMIT", "ZIP-OVERLAP", "JINJA", "TEMPLATE"))] or list(seen)
    return ", ".join(keep[:4]) or "none"


if __name__ == "__main__":
    raise SystemExit(main())

"""Content-based format detection: the bytes decide, never the file name."""

from __future__ import annotations

import json
import os
import re
import struct

from scanner.source import Source

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
MXNET_PARAMS = b"\x12\x01\x00\x00\x00\x00\x00\x00"  # mx.nd.save: u64 0x112 (the reserved u64 after it is not checked)


def sniff(src: Source) -> str:
    """Return a format name: pickle, zip, executable, tar, gzip, bz2, xz, lzma, zlib, 7z, npy, hdf5,
    safetensors, onnx, tensorflow, paddle, keras-metadata, msgpack, mxnet-params, mxnet-symbol, gguf, lz4, text,
    empty or data."""
    if src.size == 0:
        return "empty"
    head = src.head(4096)
    if head.startswith(b"\x80") and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(ZIP_MAGICS):
        return "zip"
    if _is_executable(head):
        return "executable"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(HDF5_MAGIC) or _hdf5_userblock(src):
        return "hdf5"
    if head.startswith(b"GGUF") or head.startswith(b"FUGG"):
        return "gguf"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4] in b"123456789":
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x04\x22\x4d\x18"):  # LZ4 frame: joblib.dump(compress="lz4")
        return "lz4"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if is_tar_header(head):  # tarfile (and torch's legacy loader) go by the header checksum, not `ustar`
        return "tar"
    if _is_safetensors(head, src.size):
        return "safetensors"
    if head.startswith(MXNET_PARAMS) and len(head) >= 16:
        return "mxnet-params"
    if head.startswith(LZMA_PREFIX) and len(head) >= 13:
        return "lzma"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if joblib_zf_length(head) is not None:  # joblib < 0.10 zlib container
        return "zlib"
    if _looks_like_onnx(src):
        return "onnx"
    if _looks_like_saved_model(src):
        return "tensorflow"
    if _looks_like_paddle(src):
        return "paddle"
    if _looks_like_keras_metadata(src):
        return "keras-metadata"
    if _looks_like_msgpack(src):
        return "msgpack"
    if _looks_like_text_pickle(src):
        return "pickle"
    if _looks_like_mxnet_symbol(src, head):  # before the text test: dmlc's reader takes NULs and any bytes
        return "mxnet-symbol"
    if _is_text(head) or _is_template_text(src, head):
        return "text"
    return "data"


# joblib's own prefix tests (joblib/compressor.py, numpy_pickle_utils._detect_compressor), in its order;
# the codec then decides, so a prefix is a candidate only when the codec starts decoding without error
JOBLIB_PREFIXES = (("zlib", b"x"), ("gzip", b"\x1f\x8b"), ("bz2", b"BZ"), ("lzma", b"]\x00"),
                   ("xz", b"\xfd7zXZ"), ("lz4", b"\x04\x22\x4d\x18"))
LZMA_PREFIX = b"]\x00"  # joblib's test; liblzma then accepts any power-of-two-ish dictionary size
TAR_BLOCK = 512
TRIAL_BYTES = 1 << 16


def alternate_formats(src: Source, primary: str) -> list[str]:
    """Other formats some supported loader takes the same bytes for, read from byte 0: joblib's compressor
    prefixes (tested before anything else), tar by header checksum (torch.load tries `tarfile` first), HDF5
    by its signature at 0 or any power of two >= 512 (H5FD_locate_signature), an ExecuTorch identifier at
    4..8 (Program::load checks nothing else). The engine scans each as a
    polyglot; `primary` is what sniff() returned."""
    out: list[str] = []
    head = src.head(TAR_BLOCK)
    codec = joblib_codec(src)
    if codec is not None and codec != primary and primary not in ("zip", "pickle", "torch-legacy"):
        out.append(codec)
    if primary != "tar" and is_tar_header(head):
        out.append("tar")
    if primary not in ("hdf5", "zip") and (head.startswith(HDF5_MAGIC) or _hdf5_userblock(src)):
        out.append("hdf5")
    if primary not in ("executorch", "data"):
        from scanner.formats.executorch.program import is_pte

        if is_pte(head, src.size):  # the runtime reads the identifier at 4..8, whatever bytes 0..4 are
            out.append("executorch")
    return out


def joblib_codec(src: Source) -> str | None:
    """The compressor joblib.load picks for these bytes, when that codec also starts decoding them."""
    head = src.head(ZF_HEADER)
    if head.startswith(b"ZF"):
        return "zlib" if joblib_zf_length(head) is not None else None
    for name, prefix in JOBLIB_PREFIXES:
        if head.startswith(prefix):
            return name if _decodes(name, src.head(TRIAL_BYTES)) else None
    return None


def _decodes(name: str, head: bytes) -> bool:
    """The codec yields bytes from the head without an error (a bare prefix yields nothing: not a stream)."""
    import bz2
    import lzma
    import zlib

    if name == "lz4":
        return len(head) > 7  # not tried (the library is optional); the analyzer reports what it cannot read
    decoders = {"zlib": lambda: zlib.decompressobj(15), "gzip": lambda: zlib.decompressobj(31),
                "bz2": bz2.BZ2Decompressor, "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
                "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO)}
    try:
        out = decoders[name]().decompress(head, 1 << 16)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return False
    # a whole trial window taken without error counts even with no output yet (a bz2 block yields nothing
    # until its end, up to 900 kB in): only a short stream that yields nothing is no stream
    return bool(out) or len(head) >= TRIAL_BYTES


def _nti(field: bytes) -> int | None:
    """tarfile.nti: base-256 when the first byte is 0o200/0o377, else NUL-terminated octal (None: invalid)."""
    if field[0] in (0o200, 0o377):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    text = field.split(b"\x00", 1)[0]
    try:
        return int(text.decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        return None


def is_tar_header(head: bytes) -> bool:
    """tarfile.TarInfo.frombuf's test: a full 512-byte block, not all NUL, whose checksum field (read by nti)
    equals the unsigned or the signed sum of the block with that field as spaces. No magic needed: V7 and
    pre-POSIX GNU headers open too."""
    if len(head) < TAR_BLOCK:
        return False
    block = head[:TAR_BLOCK]
    if block.count(0) == TAR_BLOCK:
        return False
    chksum = _nti(block[148:156])
    if chksum is None:
        return False
    # every other number frombuf reads with nti must parse too (mode, uid, gid, size, mtime, devmajor/minor,
    # and the old GNU sparse map of type `S`)
    fields = [(100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345)]
    if block[156:157] == b"S":
        fields += [(386 + 24 * i + d, 386 + 24 * i + d + 12) for i in range(4) for d in (0, 12)] + [(483, 495)]
    if any(_nti(block[a:b]) is None for a, b in fields):
        return False
    unsigned = 256 + sum(struct.unpack_from("148B8x356B", block))
    signed = 256 + sum(struct.unpack_from("148b8x356b", block))
    return chksum in (unsigned, signed)


EXECUTABLE_MAGICS = (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


def _is_executable(head: bytes) -> bool:
    """ELF, Mach-O, PE/APE (`MZ`), or a `#!` script followed by binary bytes (llamafile-style wrappers)."""
    if head.startswith(EXECUTABLE_MAGICS):
        return True
    if head.startswith(b"MZ"):
        return head.startswith(b"MZqFpD") or not _is_text(head)
    return head.startswith(b"#!") and b"\x00" in head


def _hdf5_userblock(src: Source) -> bool:
    """H5FD_locate_signature tries 0, 512, 1024, ... every power of two below the end of the file."""
    probes = []
    off = 512
    while off + len(HDF5_MAGIC) <= src.size:
        probes.append((off, 8))
        off *= 2
    src.prefetch(probes)  # remote sources fetch the probes in one concurrent round
    off = 512
    while off + len(HDF5_MAGIC) <= src.size:
        if src.read_at(off, 8) == HDF5_MAGIC:
            return True
        off *= 2
    return False


_ST_KEY = re.compile(rb'\{\s*"[\x20-\x7e]{1,128}?"\s*:')


def _is_safetensors(head: bytes, size: int) -> bool:
    """u64 length + JSON. Headers whose length lies (too big, too small) still go to the analyzer when the
    bytes after it clearly start a JSON object, so the lie is reported rather than waved through."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    body = head[8:]
    if 2 <= n <= size - 8:  # a UTF-8 BOM before the JSON is still a (malformed) safetensors header
        return body.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf")[:1] in (b"{", b"[")
    if n < 2:
        return body[:1] == b"{"
    # a lying length: only when the 8 bytes are binary (JSON lines or other text must not land here)
    binary = any(b < 0x09 or 0x0d < b < 0x20 or b >= 0x80 for b in head[:8])
    return binary and _ST_KEY.match(body) is not None


ZF_HEADER = 21  # b"ZF" + 19 characters of length


def joblib_zf_length(head: bytes) -> int | None:
    """The length of a joblib < 0.10 `ZF` file. joblib calls any `ZF` file one and parses the 19 bytes after
    it with int(..., 16), which takes `0X`, no prefix, spaces, signs and underscores, not only `0x`."""
    if not head.startswith(b"ZF") or len(head) < ZF_HEADER:
        return None
    try:
        return int(head[2:ZF_HEADER], 16)
    except ValueError:
        return None


def _looks_like_text_pickle(src: Source) -> bool:
    """Protocol 0/1 pickles have no magic: let the pickle tokenizer decide whether the head is an opcode
    stream (text, JSON and source code fail within a few bytes)."""
    from scanner.formats.pickle.scan import source_looks_like_pickle

    return source_looks_like_pickle(src)


def _is_dotted_name(b: bytes) -> bool:
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        return False
    return bool(s) and all(part.isidentifier() for part in s.split("."))


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the end of the window is still text
        if e.start < len(head) - 4:
            return False
    return True


def _looks_like_saved_model(src: Source) -> bool:
    from scanner.formats.tensorflow.savedmodel import looks_like_graph_def, looks_like_saved_model

    return looks_like_saved_model(src) or looks_like_graph_def(src)


def _looks_like_keras_metadata(src: Source) -> bool:
    from scanner.formats.tensorflow.keras_metadata import looks_like_keras_metadata

    return looks_like_keras_metadata(src)


def _looks_like_mxnet_symbol(src: Source, head: bytes) -> bool:
    from scanner.formats.mxnet.symbol import looks_like_symbol

    return looks_like_symbol(src, head)


def _looks_like_msgpack(src: Source) -> bool:
    from scanner.formats.flax.msgpack_reader import looks_like_msgpack

    return looks_like_msgpack(src)


def _looks_like_paddle(src: Source) -> bool:
    from scanner.formats.paddle.program import looks_like_program

    return looks_like_program(src)


TEMPLATE_MARKS = (b"{{", b"{%", b"{#")
TEMPLATE_CHUNK = 1 << 20


def _is_template_text(src: Source, head: bytes) -> bool:
    """UTF-8 with NUL bytes is still text to jinja2 (and to transformers, which reads .jinja files as UTF-8):
    a template with control characters must reach the template analyzer, not end as data. Text when the whole
    file decodes as UTF-8 and holds a Jinja delimiter; read in chunks, stopping at the first invalid byte
    (binary data fails within bytes) or the first delimiter."""
    import codecs

    if b"\x00" not in head or not _is_text(head.replace(b"\x00", b"")):
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    pos, tail = 0, b""
    while pos < src.size:
        chunk = src.read_at(pos, TEMPLATE_CHUNK)
        if not chunk:
            break
        pos += len(chunk)
        if chunk.count(0) == len(chunk):  # NUL padding: valid UTF-8, no delimiter
            tail = b"\x00"
            continue
        try:
            decoder.decode(chunk, final=pos >= src.size)
        except UnicodeDecodeError:
            return False
        if any(m in chunk for m in TEMPLATE_MARKS) or tail + chunk[:1] in TEMPLATE_MARKS:
            return True
        tail = chunk[-1:]
    return False


def _looks_like_onnx(src: Source) -> bool:
    """Walk top-level protobuf fields of a ModelProto: known field numbers with the right wire types,
    ending exactly at the end of the file, with a graph (field 7). Only headers are read.

    Unknown field numbers are accepted when ir_version (1) and graph (7) are both there: runtimes skip
    unknown fields, so one extra field must not turn a model into "data". So is a walk that runs into the
    field-count bound after a plausible start (padding with thousands of metadata entries)."""
    from scanner.protowire import ONNX_MODEL_FIELDS, walk_fields

    seen: set[int] = set()
    unknown = False
    try:
        for num, wtype, _start, _length in walk_fields(src, 0, src.size, max_fields=10_000):
            expected = ONNX_MODEL_FIELDS.get(num)
            if expected is None:
                unknown = True
            elif expected != wtype:
                return False
            seen.add(num)
    except ValueError as e:
        if str(e) != "too many fields":
            return False
        return {1, 7} <= seen
    return 7 in seen and (not unknown or 1 in seen)


def reject_duplicate_keys(items: list[tuple[str, object]]) -> dict[str, object]:
    """json object_pairs_hook: loaders keep the last of duplicate keys; scanners must see all, so refuse."""
    out: dict[str, object] = {}
    for k, v in items:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def json_loads_strict(data: bytes) -> object:
    """json.loads that rejects duplicate keys."""
    return json.loads(data, object_pairs_hook=reject_duplicate_keys)


def extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()

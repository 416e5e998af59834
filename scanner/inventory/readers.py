"""Static readers of the facts a model file records about its producer. Never loads: JSON headers,
protobuf fields, GGUF key/values and zip members are parsed; pickles are read as opcode tokens only.

Every read is bounded by META_LIMIT; what cannot be read is a note, never an exception."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from typing import Any

from scanner.inventory.facts import FileFacts
from scanner.source import Source

META_LIMIT = 16 * 1024 * 1024          # header / config / metadata bytes read per file
PICKLE_SCAN_LIMIT = 64 * 1024 * 1024   # bytes of a pickle searched for version strings
MAX_ZIP_MEMBERS = 100_000
MAX_ARRAY_SKIP = 10_000_000            # GGUF array elements skipped before giving up
_VERSION = re.compile(r"^[0-9]+(\.[0-9A-Za-z]+){0,4}([.+-][0-9A-Za-z.+-]*)?$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_doc(data: bytes) -> Any:
    from scanner.sniff import json_loads_strict

    try:
        return json_loads_strict(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


# -- safetensors -------------------------------------------------------------------------------------

def read_safetensors(src: Source, facts: FileFacts) -> None:
    (n,) = struct.unpack("<Q", src.read_at(0, 8))
    if n > META_LIMIT:
        facts.notes.append(f"safetensors header of {n} bytes not read (limit {META_LIMIT})")
        return
    doc = json_doc(src.read_at(8, n))
    if not isinstance(doc, dict):
        facts.notes.append("safetensors header is not a JSON object")
        return
    meta = doc.get("__metadata__")
    if isinstance(meta, dict):
        facts.properties["metadata"] = {str(k): str(v)[:200] for k, v in list(meta.items())[:50]}
    tensors = {k: v for k, v in doc.items() if k != "__metadata__" and isinstance(v, dict)}
    facts.properties["tensors"] = len(tensors)
    facts.properties["dtypes"] = sorted({str(v.get("dtype")) for v in tensors.values()})


# -- ONNX ModelProto top-level fields -----------------------------------------------------------------

def read_onnx(src: Source, facts: FileFacts) -> None:
    from scanner.protowire import read_varint, walk_fields

    opsets: dict[str, int] = {}
    try:
        for num, wtype, off, length in walk_fields(src, 0, src.size, 10_000):
            if wtype == 0 and num in (1, 5):
                value, _ = read_varint(src.read_at(off, length), 0)
                facts.properties["ir_version" if num == 1 else "model_version"] = value
            elif wtype == 2 and num in (2, 3, 4) and length <= 4096:
                text = src.read_at(off, length).decode("utf-8", "replace")
                if num == 2:
                    facts.producer = text or None
                elif num == 3:
                    facts.producer_version = text or None
                else:
                    facts.properties["domain"] = text
            elif wtype == 2 and num == 8 and length <= 4096:
                domain, version = _opset(src.read_at(off, length))
                opsets[domain or "ai.onnx"] = version
    except ValueError as e:
        facts.notes.append(f"ONNX fields unreadable: {e}")
    if opsets:
        facts.properties["opset_import"] = opsets


def _opset(buf: bytes) -> tuple[str, int]:
    from scanner.protowire import read_varint

    domain, version, pos = "", 0, 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        if tag == (1 << 3 | 2):
            n, pos = read_varint(buf, pos)
            domain = buf[pos:pos + n].decode("utf-8", "replace")
            pos += n
        elif tag == (2 << 3 | 0):
            version, pos = read_varint(buf, pos)
        else:
            raise ValueError("unexpected field in OperatorSetIdProto")
    return domain, version


# -- GGUF key/values ----------------------------------------------------------------------------------

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


class _GgufCursor:
    def __init__(self, src: Source) -> None:
        self.src, self.pos = src, 0

    def take(self, n: int) -> bytes:
        if n > META_LIMIT or self.pos + n > self.src.size or self.pos > META_LIMIT:
            raise ValueError("GGUF metadata runs past the file or the read limit")
        b = self.src.read_at(self.pos, n)
        self.pos += n
        return b

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        return self.take(self.unpack("<Q"))


def read_gguf(src: Source, facts: FileFacts) -> None:
    cur = _GgufCursor(src)
    if cur.take(4) != b"GGUF":
        facts.notes.append("big-endian GGUF: metadata not read")
        return
    facts.properties["gguf_version"] = cur.unpack("<I")
    general: dict[str, Any] = {}
    try:
        cur.unpack("<Q")            # tensor count
        n_kv = cur.unpack("<Q")
        for _ in range(min(n_kv, 100_000)):
            key = cur.string().decode("utf-8", "replace")
            vtype = cur.unpack("<I")
            value = _gguf_value(cur, vtype, keep=key.startswith("general.") or key.startswith("tokenizer.chat_template"))
            if key.startswith("general.") and value is not None:
                general[key] = value
            elif key.startswith("tokenizer.chat_template") and isinstance(value, str):
                facts.properties.setdefault("chat_templates", {})[key] = sha256_hex(value.encode("utf-8"))
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        facts.notes.append(f"GGUF metadata partly read: {e}")
    facts.properties["general"] = general
    if "general.architecture" in general:
        facts.properties["architecture"] = general["general.architecture"]


def _gguf_value(cur: _GgufCursor, vtype: int, keep: bool) -> Any:
    if vtype in _GGUF_SCALARS:
        return cur.unpack(_GGUF_SCALARS[vtype])
    if vtype == 8:
        raw = cur.string()
        return raw.decode("utf-8", "replace") if keep else None
    if vtype == 9:
        etype, count = cur.unpack("<I"), cur.unpack("<Q")
        if count > MAX_ARRAY_SKIP:
            raise ValueError(f"array of {count} elements")
        if etype in _GGUF_SCALARS:
            data = cur.take(struct.calcsize(_GGUF_SCALARS[etype]) * count)
            if keep and count <= 64:
                return list(struct.unpack("<" + _GGUF_SCALARS[etype][1] * count, data))
            return None
        items = [_gguf_value(cur, etype, keep and count <= 64) for _ in range(count)]
        return items if keep and count <= 64 else None
    raise ValueError(f"unknown GGUF value type {vtype}")


# -- zip: torch archives, Keras v3 ---------------------------------------------------------------------

def read_zip(src: Source, facts: FileFacts) -> None:
    from scanner.formats.zip import structure as zs

    try:
        layout = zs.parse_layout(src, max_members=MAX_ZIP_MEMBERS, max_cd_bytes=META_LIMIT)
    except Exception as e:  # noqa: BLE001 - any structural problem: the scanner reports it, we note it
        facts.notes.append(f"zip structure unreadable: {type(e).__name__}")
        return
    members = {e.name: e for e in layout.entries}

    def member(name: str, limit: int = META_LIMIT) -> bytes | None:
        e = members.get(name)
        if e is None or e.data_offset is None or e.usize > limit or e.csize > limit:
            return None
        raw = src.read_at(e.data_offset, e.csize)
        if e.method == 0:
            return raw
        if e.method == 8:
            d = zlib.decompressobj(-15)
            out = d.decompress(raw, limit)
            return out if not d.unconsumed_tail else None
        return None

    if "metadata.json" in members and "config.json" in members:
        _keras_zip(member, facts)
        return
    suffixes = ("/data.pkl", "/version", "/.data/serialization_id", "/byteorder", "/.format_version")
    torch_members = {n.split("/", 1)[1]: n for n in members if "/" in n and n.endswith(suffixes)}
    if any(n.endswith("data.pkl") for n in torch_members):
        facts.format = "torch-zip"
        facts.producer = "torch"
        for short, key in (("version", "serialization_version"), (".data/serialization_id", "serialization_id"),
                           ("byteorder", "byteorder"), (".format_version", "format_version")):
            raw = member(torch_members.get(short, ""), 4096) if short in torch_members else None
            if raw is not None:
                facts.properties[key] = raw.decode("utf-8", "replace").strip()
        return
    facts.properties["members"] = len(members)


def _keras_zip(member: Any, facts: FileFacts) -> None:
    facts.format = "keras-v3"
    facts.producer = "keras"
    meta = json_doc(member("metadata.json") or b"")
    if isinstance(meta, dict):
        if isinstance(meta.get("keras_version"), str):
            facts.producer_version = meta["keras_version"]
        if isinstance(meta.get("date_saved"), str):
            facts.properties["date_saved"] = meta["date_saved"]
    cfg = json_doc(member("config.json") or b"")
    if isinstance(cfg, dict):
        for k in ("module", "class_name"):
            if isinstance(cfg.get(k), str):
                facts.properties[k] = cfg[k]


# -- pickle: version strings in the state, read as tokens ---------------------------------------------

_MODULE = re.compile(rb"(?:\x8c(?P<n>[\x01-\xff])|\nc|^c)(?P<m>(?:sklearn|xgboost|lightgbm|torch|numpy|joblib|"
                     rb"pandas|scipy|catboost|keras|tensorflow)(?:\.[A-Za-z0-9_]+)*)")


def read_pickle(src: Source, facts: FileFacts) -> None:
    data = src.read_at(0, min(src.size, PICKLE_SCAN_LIMIT))
    modules = set()
    for m in _MODULE.finditer(data):
        name = m.group("m")
        if m.group("n") is not None and m.group("n")[0] != len(name):
            continue    # the length byte does not cover this name: not a SHORT_BINUNICODE of it
        modules.add(name.split(b".")[0].decode())
    if modules:
        facts.properties["modules"] = sorted(modules)
    if "joblib" in modules:
        facts.format = "joblib"
    version = _sklearn_version(data)
    if version is not None:
        facts.properties["sklearn_version"] = version
    if "xgboost" in modules:
        facts.producer = "xgboost"
        facts.producer_version = _xgboost_version(data)
    elif "lightgbm" in modules:
        facts.producer = "lightgbm"
        fmt = re.search(rb"tree\nversion=(v[0-9]+)\n", data)   # the head of Booster.model_to_string()
        if fmt:
            facts.properties["model_format"] = fmt.group(1).decode()
        facts.notes.append("lightgbm records its model format version, not the package version")
    elif version is not None or "sklearn" in modules:
        facts.producer = "scikit-learn"
        facts.producer_version = version
    elif "torch" in modules:
        facts.producer = "torch"


_UBJ_INT = {ord("i"): ">b", ord("U"): ">B", ord("I"): ">h", ord("l"): ">i", ord("L"): ">q"}


def _xgboost_version(data: bytes) -> str | None:
    """The learner's `version` array in the booster's raw model: UBJSON (xgboost >= 2) or JSON."""
    m = re.search(rb'"version"\s*:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]', data)
    if m:
        return ".".join(g.decode() for g in m.groups())
    key = b"L" + struct.pack(">q", 7) + b"version["
    i = data.find(key)
    if i == -1:
        return None
    pos = i + len(key)
    try:
        fixed = None
        if data[pos] == ord("$"):
            fixed, pos = data[pos + 1], pos + 2
        if data[pos] != ord("#"):
            return None
        cfmt = _UBJ_INT[data[pos + 1]]
        (count,) = struct.unpack_from(cfmt, data, pos + 2)
        pos += 2 + struct.calcsize(cfmt)
        if not 1 <= count <= 4:
            return None
        parts = []
        for _ in range(count):
            marker = fixed
            if marker is None:
                marker, pos = data[pos], pos + 1
            fmt = _UBJ_INT[marker]
            (v,) = struct.unpack_from(fmt, data, pos)
            pos += struct.calcsize(fmt)
            parts.append(str(v))
        return ".".join(parts)
    except (KeyError, IndexError, struct.error):
        return None


def _sklearn_version(data: bytes) -> str | None:
    """The string constant after the key '_sklearn_version' (BaseEstimator.__getstate__ adds it)."""
    from scanner.formats.pickle.ops import OpError, read_op

    key = b"_sklearn_version"
    start = 0
    while (i := data.find(key, start)) != -1:
        start = i + 1
        if not ((i >= 2 and data[i - 2] == 0x8C and data[i - 1] == len(key))
                or (i >= 5 and data[i - 5:i] == b"X" + struct.pack("<I", len(key)))):
            continue
        pos = i + len(key)
        try:
            for _ in range(4):
                op = read_op(data, pos, len(data))
                if op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                    pos = op.end
                    continue
                if isinstance(op.arg, str) and _VERSION.match(op.arg):
                    return op.arg
                break
        except OpError:
            continue
    return None


# -- JSON and text files of a model folder ------------------------------------------------------------

def read_text(src: Source, facts: FileFacts, name: str) -> dict[str, Any]:
    """Facts of text files; returns model-card front matter when the file is one."""
    if src.size > META_LIMIT:
        return {}
    data = src.read_at(0, src.size)
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith(".jinja"):
        facts.properties["chat_template_sha256"] = sha256_hex(data)
        return {}
    if data.lstrip().startswith(b"{"):
        doc = json_doc(data)
        if isinstance(doc, dict):
            _json_config(doc, facts)
        return {}
    if data.startswith(b"---"):
        card = front_matter(data)
        if card:
            facts.format = "model-card"
        return card
    return {}


def _json_config(doc: dict[str, Any], facts: FileFacts) -> None:
    if isinstance(doc.get("transformers_version"), str):
        facts.format = "transformers-config"
        facts.producer = "transformers"
        facts.producer_version = doc["transformers_version"]
        for key in ("architectures", "model_type", "torch_dtype", "dtype", "_name_or_path"):
            if key in doc and isinstance(doc[key], (str, list)):
                facts.properties[key] = doc[key]
    template = doc.get("chat_template")
    if isinstance(template, str):
        facts.properties["chat_template_sha256"] = sha256_hex(template.encode("utf-8"))
    elif isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        facts.properties["chat_template_sha256"] = {
            str(t.get("name")): sha256_hex(str(t.get("template")).encode("utf-8"))
            for t in template if isinstance(t, dict)}


CARD_KEYS = ("license", "license_name", "datasets", "base_model", "language", "library_name", "pipeline_tag",
             "tags", "model_name")


def front_matter(data: bytes) -> dict[str, Any]:
    """Hugging Face model-card YAML front matter (between the first two '---' lines), safe-loaded."""
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return {}
    block = "\n".join(lines[1:end])
    doc = _yaml(block)
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    for k in CARD_KEYS:
        v = doc.get(k)
        if isinstance(v, (str, int, float)):
            out[k] = str(v)
        elif isinstance(v, list):
            out[k] = [str(x) for x in v if isinstance(x, (str, int, float))]
    return out


def _yaml(block: str) -> Any:
    try:
        import yaml
    except ImportError:
        return _tiny_yaml(block)
    try:
        return yaml.safe_load(block)   # the safe loader builds only plain data
    except yaml.YAMLError:
        return None


def _tiny_yaml(block: str) -> dict[str, Any]:
    """`key: value` and `key:` followed by `- item` lines: all a model card's top keys need."""
    out: dict[str, Any] = {}
    key: str | None = None
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(("- ", "  - ")) and key is not None:
            out.setdefault(key, [])
            if isinstance(out[key], list):
                out[key].append(line.split("- ", 1)[1].strip().strip("'\""))
            continue
        if ":" in line and not line.startswith(" "):
            k, v = line.split(":", 1)
            key = k.strip()
            v = v.strip().strip("'\"")
            out[key] = v if v else []
    return out

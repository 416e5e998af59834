"""Keras 2 `keras_metadata.pb` next to a SavedModel's `saved_model.pb` (tf.keras / tf_keras `model.save(path,
save_format="tf")`): a `SavedMetadata` protobuf whose nodes carry each layer's JSON config.

`tf_keras.models.load_model(path)` parses it (saving/legacy/saved_model/load.py) and revives every layer from
its config: a Lambda layer's marshalled bytecode is rebuilt and run. So every node's JSON goes through the
Keras config checks of `.keras`/`.h5` files. Field numbers: tf_keras/protobuf/saved_metadata.proto
(SavedMetadata.nodes = 1; SavedObject node_id = 2, node_path = 3, identifier = 4, metadata = 5, version = 6).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding
from scanner.formats.tensorflow.savedmodel import ProtoError, _Budget, _fields
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

_NODES = 1
SAVED_OBJECT = {2: 0, 3: 2, 4: 2, 5: 2, 6: 2}
KERAS_IDENTIFIERS = (b"_tf_keras", b"trackable_")
_SNIFF_FIELDS = 10_000
_MAX_TEXT = 4096


def looks_like_keras_metadata(src: Source) -> bool:
    """Protobuf wire format to the end of the file with a node (field 1) whose metadata (field 5) is a JSON
    object or whose identifier (field 4) is a Keras one. Fields the proto does not declare, or of another wire
    type, are allowed as protobuf parsers skip them (so must we, or a padded file would pass as data). A walk
    that reaches the sniff bound after such a node counts as the shape."""
    budget = _Budget(_SNIFF_FIELDS, 0)
    keras = False
    try:
        for num, wtype, off, length in _fields(src, 0, src.size, budget):
            if keras or num != _NODES or wtype != 2:
                continue
            for inum, iw, ioff, ilen in _fields(src, off, off + length, budget):
                if iw != 2 or not ilen:
                    continue
                if inum == 5 and src.read_at(ioff, min(ilen, 64)).lstrip(b" \t\r\n")[:1] == b"{":
                    keras = True
                elif inum == 4 and src.read_at(ioff, min(ilen, 16)).startswith(KERAS_IDENTIFIERS):
                    keras = True
    except ProtoError as e:
        return keras and str(e) == "max_proto_fields"
    return keras


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    budget = _Budget(ctx.limits.max_proto_fields, ctx.limits.max_graph_nodes)
    findings: list[Finding] = []
    seen: set[tuple[str, str | None]] = set()
    nodes = 0
    try:
        for num, wtype, off, length in _fields(src, 0, src.size, budget):
            if num != _NODES or wtype != 2:
                # protobuf skips it; tf_keras never writes it
                findings.append(ctx.finding("TF-MALFORMED", f"field {num} (wire type {wtype}) is not a "
                                            "SavedMetadata field", src, offset=off))
                continue
            nodes += 1
            for f in _node(src, ctx, off, off + length, budget):
                key = (f.rule_id, f.evidence)
                if key not in seen:  # a model's config repeats each layer's config: report it once
                    seen.add(key)
                    findings.append(f)
    except ProtoError as e:
        if str(e) == "max_proto_fields":
            findings.append(ctx.finding("LIMIT-EXCEEDED", "keras_metadata.pb walk stopped at max_proto_fields; "
                                        "the rest was not checked", src, evidence=str(e)))
        else:
            findings.append(ctx.finding("TF-MALFORMED", "keras_metadata.pb is not a parseable SavedMetadata", src,
                                        evidence=str(e)[:300]))
    yield from findings
    yield ctx.finding("KERAS-METADATA", f"Keras SavedModel metadata walked: {nodes} nodes", src)


def _node(src: Source, ctx: ScanContext, start: int, end: int, budget: _Budget) -> list[Finding]:
    path, identifier, metadata = "?", "", None
    for num, wtype, off, length in _fields(src, start, end, budget):
        if wtype != 2 or num not in SAVED_OBJECT:
            continue
        if num == 3:
            path = _text(src, off, length)
        elif num == 4:
            identifier = _text(src, off, length)
        elif num == 5:
            metadata = (off, length)  # proto3: the last one wins, as in the loader
    if metadata is None or metadata[1] == 0:
        return []
    off, length = metadata
    if length > ctx.limits.max_header_bytes:
        return [ctx.finding("LIMIT-EXCEEDED", f"metadata of node {path} exceeds max_header_bytes; not checked", src,
                            offset=off, evidence="max_header_bytes")]
    from scanner.sniff import json_loads_strict

    try:
        config: Any = json_loads_strict(src.read_at(off, length))
    except (ValueError, RecursionError) as e:
        return [ctx.finding("TF-MALFORMED", f"metadata of node {path} is not strict JSON", src, offset=off,
                            evidence=str(e)[:200])]
    from scanner.formats.hdf5.keras import walk_config

    return walk_config(config, src, ctx, f"{path} {identifier}".strip(), off)


def _text(src: Source, off: int, length: int) -> str:
    return src.read_at(off, min(length, _MAX_TEXT)).decode("utf-8", "backslashreplace")

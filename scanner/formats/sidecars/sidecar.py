"""Sidecar files next to the weights (format `text`): chat templates in tokenizer configs, shard indexes,
remote-code hooks in config.json. Chosen by the name a loader opens them by; everything else is plain text."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding
from scanner.source import Source

TEMPLATE_KINDS = {"escape": "CHAT-TEMPLATE-SSTI", "dunder": "CHAT-TEMPLATE-DUNDER",
                  "escape-string": "CHAT-TEMPLATE-DUNDER", "dynamic": "CHAT-TEMPLATE-DYNAMIC-ATTR",
                  "sink": "CHAT-TEMPLATE-SUSPICIOUS", "gadget": "CHAT-TEMPLATE-SUSPICIOUS",
                  "load": "CHAT-TEMPLATE-SUSPICIOUS", "malformed": "CHAT-TEMPLATE-MALFORMED"}


def analyze(src: Source, ctx: Any) -> Iterator[Finding]:
    if ctx.depth == 0:
        yield ctx.finding("FORMAT-NOT-MODEL", "not a model format (text)", src)
    from scanner.formats.sidecars.xml_model import looks_like_xml, xml_findings

    if looks_like_xml(src.head(256)):  # PMML and other XML models: whatever their name (content decides)
        yield from xml_findings(src, ctx)
    conf = ctx.rules.doc("sidecar").get("sidecar", {})
    name = src.name.rsplit("/", 1)[-1]

    def matches(key: str) -> bool:
        # case-insensitive: on macOS / Windows file systems a loader opening tokenizer_config.json gets
        # Tokenizer_Config.JSON as well
        return any(fnmatch.fnmatchcase(name.lower(), pat.lower()) for pat in conf.get(key, []))

    kind = ("template_json" if matches("template_json") else "template_file" if matches("template_files")
            else "index" if matches("index_files") else "config" if matches("config_files")
            else "skops" if matches("skops_schema") else "yaml" if matches("yaml_files")
            else "coreml" if matches("coreml_manifest")
            else "json" if matches("keras_json") else None)
    max_bytes = conf.get("max_bytes", 16 << 20)
    if kind is None:
        # OmegaConf.load reads a Hydra config under any name: content decides
        yield from _any_config(src, ctx, max_bytes)
        return
    if src.size > max_bytes:
        yield ctx.finding("LIMIT-EXCEEDED", f"sidecar {name} larger than the sidecar read limit; not analyzed", src,
                          evidence="sidecar max_bytes")
        return
    data = src.read_all(ctx.limits.max_read_bytes)
    from scanner.formats.sidecars import config as sidecar_config
    from scanner.formats.sidecars.hydra import could_hold_targets

    if kind == "yaml":
        yield from sidecar_config.yaml_findings(data.decode("utf-8", "replace"), src, ctx)
        return
    if kind == "template_file":
        yield from _templates(src, ctx, [(name, data.decode("utf-8", "replace"))])
    try:
        doc, dupes = _load_json(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        if kind != "template_file":
            yield ctx.finding("SIDECAR-MALFORMED", f"{name} is not strict JSON: {str(e)[:120]}", src)
        if could_hold_targets(data):  # YAML, or JSON only YAML reads (OmegaConf.load parses JSON as YAML)
            yield from sidecar_config.hydra_text_findings(data.decode("utf-8", "replace"), src, ctx)
        return
    if could_hold_targets(data):
        yield from sidecar_config.hydra_findings([doc, *(v for _, v in dupes)], src, ctx)
    if kind == "template_file":
        return
    if dupes and kind not in ("template_json", "index", "config"):
        yield ctx.finding("SIDECAR-MALFORMED", f"{name} is not strict JSON: duplicate key {dupes[0][0][:80]!r}", src)
        return
    if dupes:
        # loaders keep the last value, reviewers and other parsers may see the first: analyze every value
        keys = sorted({k for k, _ in dupes})
        yield ctx.finding("SIDECAR-DUPLICATE-KEY", f"{name} repeats key(s) {', '.join(map(repr, keys))[:200]}", src,
                          evidence=repr(keys)[:200])
    if not isinstance(doc, dict):
        return
    if kind == "skops":
        yield from sidecar_config.skops_findings(doc, src, ctx)
        return
    if kind == "coreml":
        yield from _coreml_manifest(src, ctx, doc)
        return
    from scanner.formats.paddle.program import is_pir_program, pir_findings

    if is_pir_program(doc):  # paddle.jit.save's PIR program (`<prefix>.json`), run by paddle.jit.load
        yield from pir_findings(doc, src, ctx)
        return
    if sidecar_config.keras_like(doc) and not _archive_root(src, ("config.json", "metadata.json")):
        from scanner.formats.hdf5.keras import walk_config

        yield from walk_config(doc, src, ctx, name)  # model.to_json() output, a config.json out of place
    if kind == "json":
        return
    if kind == "template_json":
        values = [doc.get("chat_template"), *(v for k, v in dupes if k == "chat_template")]
        yield from _templates(src, ctx, [s for v in values for s in _template_sources(v)])
    elif kind == "index":
        yield from _index(src, ctx, name, doc, [v for _, v in dupes if isinstance(v, str)])
    if kind in ("template_json", "config"):  # tokenizers and processors have auto_map too
        for key in conf.get("remote_code_keys", []):
            if doc.get(key):
                yield ctx.finding("SIDECAR-REMOTE-CODE", f"{name} `{key}` points at repository code", src,
                                  evidence=f"{key}={str(doc[key])[:200]}")


def _any_config(src: Source, ctx: Any, max_bytes: int) -> Iterator[Finding]:
    """A text file of any other name that may be a Hydra config (`_target_` spelled out or escaped)."""
    from scanner.formats.sidecars.hydra import could_hold_targets

    if src.size > max_bytes:
        # too large to compose: a `_target_` anywhere in it is reported unread
        for off in range(0, src.size, 1 << 20):
            if b"_target_" in src.read_at(max(0, off - 16), (1 << 20) + 16):
                yield ctx.finding("LIMIT-EXCEEDED", f"{src.name} names `_target_` and is larger than the sidecar "
                                  "read limit; Hydra targets not analyzed", src, evidence="sidecar max_bytes")
                return
        return
    data = src.read_all(ctx.limits.max_read_bytes)
    if could_hold_targets(data):
        from scanner.formats.sidecars.config import hydra_text_findings

        yield from hydra_text_findings(data.decode("utf-8", "replace"), src, ctx)


def _load_json(data: bytes) -> tuple[object, list[tuple[str, object]]]:
    """json.loads keeping the last of duplicate keys (as loaders do) and returning the overwritten pairs."""
    import json

    dupes: list[tuple[str, object]] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in items:
            if k in out:
                dupes.append((k, out[k]))
            out[k] = v
        return out

    return json.loads(data, object_pairs_hook=pairs), dupes


def _archive_root(src: Source, names: tuple[str, ...]) -> bool:
    """A Keras archive's own config.json / metadata.json: the archive analyzer walks those."""
    return src.member is not None and src.member.rsplit("!", 1)[-1] in names


def _template_sources(value: object) -> Iterator[tuple[str, object]]:
    """(label, template) pairs; a template that is not a string is yielded as it is (reported malformed)."""
    if value is None:
        return
    if isinstance(value, list):  # [{"name": "default", "template": "..."}, ...] as transformers saves it
        for i, item in enumerate(value):
            if isinstance(item, dict) and "template" in item:
                yield f"chat_template[{str(item.get('name', i))[:60]}]", item["template"]
            else:
                yield f"chat_template[{i}]", item
    elif isinstance(value, dict):  # {name: template}, which transformers also accepts
        for name, template in value.items():
            yield f"chat_template[{name[:60]}]", template
    else:
        yield "chat_template", value


def _templates(src: Source, ctx: Any, sources: list[tuple[str, object]]) -> Iterator[Finding]:
    from scanner.formats.sidecars.jinja_template import analyze_template, classify_hits, template_rules

    for key, source in sources:
        if not isinstance(source, str):
            yield ctx.finding("CHAT-TEMPLATE-MALFORMED", f"{key} is a JSON {type(source).__name__}, not a template "
                              "string", src, evidence=f"key={key}")
            continue
        for rule, sev, message in classify_hits(analyze_template(source, template_rules(ctx.rules), ctx.limits),
                                                TEMPLATE_KINDS):
            yield ctx.finding(rule, f"{key}: {message}", src, evidence=f"key={key}", severity=sev)


def _index(src: Source, ctx: Any, name: str, doc: dict[str, Any], extra: list[str]) -> Iterator[Finding]:
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        return
    from scanner.formats.pathcheck import escapes, lookalikes

    table = lookalikes(ctx.rules)
    shards = sorted({v for v in [*weight_map.values(), *extra] if isinstance(v, str)})
    for shard in shards:
        unified = shard.replace("\\", "/")
        # url: hub clients fetch shards by URL before they are joined to the local folder
        if escapes(shard, table, url=True) is not None:
            yield ctx.finding("SIDECAR-INDEX-PATH", f"{name} maps tensors to {shard!r}, outside the model folder",
                              src, evidence=shard)
        elif name.endswith(".safetensors.index.json") and not unified.endswith(".safetensors"):
            yield ctx.finding("SIDECAR-INDEX-FORMAT", f"{name} maps tensors to {shard!r}, not a safetensors file",
                              src, evidence=shard)


def _coreml_manifest(src: Source, ctx: Any, doc: dict[str, Any]) -> Iterator[Finding]:
    """An `.mlpackage`'s Manifest.json: coremltools joins each entry's path to Data/ and opens it."""
    from scanner.formats.pathcheck import escapes, lookalikes

    if not {"itemInfoEntries", "rootModelIdentifier"} & doc.keys():
        return  # some other manifest.json (the name matches case-insensitively): not a package manifest
    entries = doc.get("itemInfoEntries")
    if not isinstance(entries, dict):
        yield ctx.finding("COREML-MANIFEST-MALFORMED", "Manifest.json has no itemInfoEntries object", src)
        return
    root = doc.get("rootModelIdentifier")
    if root is not None and root not in entries:
        yield ctx.finding("COREML-MANIFEST-MALFORMED", "rootModelIdentifier names no itemInfoEntries entry", src,
                          evidence=str(root)[:100])
    table = lookalikes(ctx.rules)
    for ident, entry in entries.items():
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            yield ctx.finding("COREML-MANIFEST-MALFORMED", f"entry {str(ident)[:60]} has no string path", src)
            continue
        if escapes(path, table) is not None:
            yield ctx.finding("COREML-MANIFEST-PATH", f"entry {str(ident)[:60]} opens {path[:200]!r}, outside the "
                              "package's Data/ folder", src, evidence=path[:200])

"""TFLite flatbuffers (format `tflite`) and their metadata convention.

A TFLite model is a flatbuffer: a uint32 offset to the root table, then the file identifier `TFL3`
(tensorflow/lite/schema/schema.fbs `file_identifier "TFL3"`). The metadata writers of tflite-support
(metadata_writers / MetadataPopulator) append the model's *associated files* (labels, vocabularies,
descriptions) as a zip after the flatbuffer, so zip readers can pull them out. That layout is the format's
own, not a polyglot trick, as long as the zip holds what the convention allows: data a loader does not run.
A member that a loader routes on (a pickle, a Keras `config.json`, a torch record) or whose content is
code-bearing keeps the POLYGLOT finding; every member is scanned either way.

The operator codes are read by tflite_ops.py: builtin and registered custom ops are the runtime's own
kernels (an unknown op fails to load); Flex ops are TensorFlow ops and judged as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scanner.findings import Finding, Severity
from scanner.source import Source

FILE_IDENTIFIER = b"TFL3"


def is_tflite(head: bytes, size: int) -> bool:
    """The flatbuffer header: root offset (aligned, inside the file) then the `TFL3` identifier."""
    if len(head) < 8 or head[4:8] != FILE_IDENTIFIER:
        return False
    root = int.from_bytes(head[:4], "little")
    return 8 <= root < size and root % 4 == 0


def analyze(src: Source, ctx: Any) -> Iterable[Finding]:
    from scanner.formats.tensorflow.tflite_ops import op_findings

    return [*op_findings(src, ctx), *_metadata_zip(src, ctx)]


def _metadata_zip(src: Source, ctx: Any) -> list[Finding]:
    from scanner.formats.zip import reader as zf

    findings = zf.appended_zip(src, "data", ctx)
    if not findings:
        return []
    why = _breaks_convention(src, ctx)
    if why is not None:
        return findings
    out: list[Finding] = []
    for f in findings:
        if f.rule_id == "POLYGLOT":
            out.append(ctx.finding("TFLITE-ASSOCIATED-FILES", "TFLite metadata: associated files appended as a "
                                   "zip (the tflite-support convention); every member was scanned", src,
                                   offset=f.location.offset if f.location else None, evidence=f.evidence,
                                   severity=Severity.INFO))
        else:
            out.append(f)
    return out


def _breaks_convention(src: Source, ctx: Any) -> str | None:
    """Why the appended zip is more than associated files (None when it is only that)."""
    from scanner.formats.zip import reader as zf
    from scanner.formats.zip import structure as zs
    from scanner.sniff import extension, sniff

    cfg = _config(ctx)
    try:
        layout = zs.parse_layout(src, max_members=ctx.limits.max_members, max_cd_bytes=ctx.limits.max_header_bytes)
    except Exception:  # noqa: BLE001 - whatever the zip reader made of it is already reported
        return "unreadable zip"
    st = zf._State(src, ctx, zf._config(ctx))
    for e in layout.entries:
        base = e.name.rsplit("/", 1)[-1].lower()
        if e.name.lower() in cfg["routed_names"] or base in cfg["routed_names"]:
            return f"member {e.name!r} is one a loader routes on"
        if extension(base) in cfg["routed_extensions"]:
            return f"member {e.name!r} has a loader's extension"
        if e.is_dir or e.local is None:
            continue
        if e.method not in st.cfg.methods or e.flags & 0x1:
            return f"member {e.name!r} is encrypted or uses compression method {e.method}"
        child, _ = zf._member_source(st, e, e.name)
        if child is None:
            return f"member {e.name!r} could not be read"
        fmt = sniff(child)
        if fmt not in cfg["member_formats"]:
            return f"member {e.name!r} is {fmt}"
    return None


def _config(ctx: Any) -> dict[str, frozenset[str]]:
    def build() -> dict[str, frozenset[str]]:
        doc = ctx.rules.doc("tflite").get("tflite", {})
        return {k: frozenset(str(x).lower() for x in doc.get(k, []))
                for k in ("member_formats", "routed_names", "routed_extensions")}
    return ctx.rules.cached("tflite", build)  # type: ignore[no-any-return]

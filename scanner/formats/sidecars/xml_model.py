"""XML model files (PMML and any XML a model loader parses): entity declarations in the DOCTYPE.

PMML loaders parse with XML libraries that may resolve entities: lxml < 5 defaults to resolve_entities=True
(a SYSTEM entity reads a local file into the model, XXE), Java SAX readers (behind jpmml) resolve external
entities and DTDs unless configured not to, and expat expands nested internal entities (billion laughs).
Only the prolog up to the root element is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding
from scanner.source import Source

PROLOG_BYTES = 1 << 20  # the DOCTYPE precedes the root element; a longer prolog is itself reported
_XML_START = re.compile(rb"^(\xef\xbb\xbf)?\s*(<\?xml[\s?]|<!DOCTYPE\s|<PMML[\s>]|<!--)", re.I)
_DOCTYPE = re.compile(rb"<!DOCTYPE\s+[^\s\[>]+(?P<ext>\s+(?:SYSTEM|PUBLIC)\s[^\[>]*)?\s*(?:\[(?P<subset>.*?)\])?\s*>",
                      re.S | re.I)
_ENTITY = re.compile(rb"<!ENTITY\s+(%\s+)?(?P<name>[^\s]+)\s+(?P<kind>SYSTEM|PUBLIC)?\s*(?P<rest>[^>]*)>", re.S | re.I)
_REF = re.compile(rb"[&%][A-Za-z_][\w.-]*;")


def looks_like_xml(head: bytes) -> bool:
    return _XML_START.match(head) is not None


def xml_findings(src: Source, ctx: Any) -> Iterator[Finding]:
    data = src.read_at(0, min(src.size, PROLOG_BYTES))
    if b"<!DOCTYPE" not in data.upper() and b"<!ENTITY" not in data.upper():
        return
    m = _DOCTYPE.search(data)
    if m is None:
        yield ctx.finding("XML-DOCTYPE", "a DOCTYPE that does not close within the prolog window: entity "
                          "declarations could not be checked", src, evidence=f"window={PROLOG_BYTES}")
        return
    if m.group("ext"):
        yield ctx.finding("XML-EXTERNAL-ENTITY", "the DOCTYPE names an external DTD: validating parsers fetch it "
                          "(a file or URL of the author's choosing)", src, offset=m.start(),
                          evidence=m.group(0)[:200].decode("utf-8", "replace"))
    subset = m.group("subset") or b""
    for e in _ENTITY.finditer(subset):
        name = e.group("name").decode("utf-8", "replace")
        text = e.group(0)[:200].decode("utf-8", "replace")
        if e.group("kind"):
            yield ctx.finding("XML-EXTERNAL-ENTITY", f"entity {name} is SYSTEM/PUBLIC: lxml and Java XML readers "
                              "read the file or URL it names into the model (XXE)", src,
                              offset=m.start("subset") + e.start(), evidence=text)
        elif _REF.search(e.group("rest")):
            yield ctx.finding("XML-ENTITY-EXPANSION", f"entity {name} expands other entities: nested expansion "
                              "is the billion-laughs memory bomb", src,
                              offset=m.start("subset") + e.start(), evidence=text)

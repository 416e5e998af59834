"""Operator rules of graph formats (Paddle programs, MXNet symbols): `[[op]]` entries and the generated list
of operators the framework registers, read once per rules set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scanner.record import record

if TYPE_CHECKING:
    from scanner.context import ScanContext


@record(frozen=True)
class OpRules:
    ops: dict[str, tuple[str, str, str]]  # op -> (rule, severity, reason)
    registered: frozenset[str]


def op_rules(ctx: ScanContext, doc_name: str) -> OpRules:
    def build() -> OpRules:
        doc = ctx.rules.doc(doc_name)
        ops = {e["op"]: (e["rule"], e["severity"], e["reason"]) for e in doc.get("op", [])}
        return OpRules(ops, frozenset(doc.get("registered_ops", {}).get("ops", [])))
    return ctx.rules.cached(doc_name, build)  # type: ignore[no-any-return]

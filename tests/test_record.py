"""scanner.record behaves as the dataclass features the scanner relied on (init, defaults, factories, repr,
eq, hash, frozen, replace, asdict, pickling), without importing dataclasses."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import pytest

from scanner.findings import Finding, Location, Severity
from scanner.limits import Limits
from scanner.record import FrozenInstanceError, asdict, field, fields, record, replace
from scanner.rules import DenyEntry, Policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


@record
class Box:
    items: dict[str, int] = field(default_factory=dict)
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class DPoint:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


def test_init_defaults_and_factories_match_dataclasses() -> None:
    for args, kwargs in (((1,), {}), ((1, 2), {}), ((), {"x": 3, "tags": ["a"]}), ((1,), {"y": 5})):
        p, d = Point(*args, **kwargs), DPoint(*args, **kwargs)
        assert (p.x, p.y, p.tags) == (d.x, d.y, d.tags)
    assert Point(1).tags is not Point(1).tags  # a fresh list each time
    assert Box().items == {} and Box().items is not Box().items


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, 2, [], 4), {}), ((1,), {"x": 2}), ((1,), {"z": 2})])
def test_bad_arguments_raise_type_error_like_dataclasses(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        DPoint(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Point(*args, **kwargs)  # type: ignore[arg-type]


def test_repr_eq_hash() -> None:
    assert repr(Point(1, 2, ["a"])) == repr(DPoint(1, 2, ["a"])).replace("DPoint", "Point")
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert Point(1) != DPoint(1)  # other classes never compare equal
    assert hash(Location("m", 3)) == hash(Location("m", 3))
    assert len({Location("m", 3), Location("m", 3), Location("m", 4)}) == 2
    with pytest.raises(TypeError):
        hash(Box())  # eq without frozen: unhashable, as dataclasses


def test_frozen_refuses_assignment_and_deletion() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y  # type: ignore[misc]
    b = Box()
    b.label = "ok"
    assert b.label == "ok"


def test_replace_fields_asdict() -> None:
    f = Finding("R", Severity.HIGH, "m", Location("a", 1))
    g = replace(f, severity=Severity.INFO)
    assert (g.rule_id, g.severity, g.location) == ("R", Severity.INFO, Location("a", 1)) and f.severity is Severity.HIGH
    with pytest.raises(TypeError):
        replace(f, bogus=1)
    assert [x.name for x in fields(Finding)] == ["rule_id", "severity", "message", "location", "evidence", "reference"]
    assert replace(DPoint(1), y=3) == DPoint(1, 3)  # real dataclasses are handed to dataclasses.replace
    policy = Policy(deny_globals=(DenyEntry("os.system", Severity.HIGH, "r"),), limits=Limits(max_depth=3))
    d = asdict(policy)
    assert d["deny_globals"] == ({"name": "os.system", "severity": Severity.HIGH, "reason": "r", "reference": None},)
    assert d["limits"]["max_depth"] == 3 and d["severity_overrides"] == {}


def test_limits_overrides_still_checked() -> None:
    assert Limits().with_overrides({"max_depth": 4}).max_depth == 4
    with pytest.raises((KeyError, ValueError, TypeError)):
        Limits().with_overrides({"no_such_limit": 1})


def test_records_pickle_round_trip() -> None:
    """Policies and cache specs go to worker processes by pickle."""
    p = Policy(allow_globals=("a.b",), limits=Limits(max_depth=5))
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.limits.max_depth == 5
    with pytest.raises(FrozenInstanceError):
        q.fail_on = Severity.LOW  # type: ignore[misc]


def test_mutable_default_refused() -> None:
    with pytest.raises(ValueError):
        @record
        class Bad:
            xs: list[int] = []  # noqa: RUF012


def test_importing_the_core_does_not_import_dataclasses() -> None:
    code = ("import sys\nimport scanner.findings, scanner.limits, scanner.rules, scanner.context\n"
            "print('dataclasses' in sys.modules, 'inspect' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.stdout.split() == ["False", "False"]

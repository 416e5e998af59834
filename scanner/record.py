"""`@record`: the part of `@dataclass` the scanner's hot path uses (init, repr, eq, frozen, hash, field
defaults and factories, replace, asdict, fields), without its start-up cost.

`import dataclasses` pulls in inspect, ast and dis, and each decorated class costs about 4 million
instructions (an exec per method, annotation checks, an inspect.signature docstring): with ~35 classes, a
third of a one-file scan's CPU. Here a class costs a dict of its annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda f: f

T = TypeVar("T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record (dataclasses.FrozenInstanceError's counterpart)."""


class Field:
    __slots__ = ("name", "default", "default_factory")

    def __init__(self, default: Any = _MISSING, default_factory: Any = _MISSING) -> None:
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING) -> Any:
    return Field(default, default_factory)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """Class decorator: fields are the class's own annotations, in order (as @dataclass(frozen=...))."""
    def wrap(c: type[T]) -> type[T]:
        return _build(c, frozen)
    return wrap if cls is None else wrap(cls)


def _build(cls: type[T], frozen: bool) -> type[T]:
    fields_: list[Field] = []
    for name, ann in cls.__dict__.get("__annotations__", {}).items():
        if isinstance(ann, str) and ann.startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        elif f.default is not _MISSING and type(f.default) in (list, dict, set):
            raise ValueError(f"mutable default {type(f.default).__name__} for field {name} is not allowed: "
                             "use default_factory")
        fields_.append(f)
    seen_default = False
    for f in fields_:
        has = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has
    names = tuple(f.name for f in fields_)
    cls.__record_fields__ = tuple(fields_)  # type: ignore[attr-defined]
    cls.__match_args__ = names  # type: ignore[attr-defined]
    made = _methods(cls.__qualname__, fields_)
    own = cls.__dict__
    if "__init__" not in own:
        cls.__init__ = made["__init__"]  # type: ignore[misc]
    if "__repr__" not in own:
        cls.__repr__ = _repr(names)  # type: ignore[assignment]
    if "__eq__" not in own:
        cls.__eq__ = made["__eq__"]  # type: ignore[assignment]
    if "__hash__" not in own or own["__hash__"] is None:
        # as dataclasses: eq + frozen hashes the fields, eq alone makes instances unhashable
        cls.__hash__ = made["__hash__"] if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    return cls


def _methods(qualname: str, fields_: list[Field]) -> dict[str, Any]:
    """__init__, __eq__ and __hash__ for the fields: closures over the field names, no compile (a compile per
    class would cost as much start-up as it saves), with C dict operations doing the per-field work."""
    names = tuple(f.name for f in fields_)
    n = len(names)
    position = {name: i for i, name in enumerate(names)}
    keys = position.keys()
    base = {f.name: f.default for f in fields_ if f.default is not _MISSING}
    factories = tuple((f.name, f.default_factory) for f in fields_ if f.default_factory is not _MISSING)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not kwargs and len(args) == n:  # every field given by position
            self.__dict__.update(zip(names, args, strict=False))
            return
        if not args and len(kwargs) == n and kwargs.keys() == keys:  # every field given by name
            self.__dict__.update(kwargs)
            return
        if len(args) > n:
            _bad_call(qualname, names, base.keys() | dict(factories).keys(), args, kwargs)
        values = dict(base)
        values.update(zip(names, args, strict=False))
        if kwargs:
            if not kwargs.keys() <= keys or (args and min(map(position.__getitem__, kwargs)) < len(args)):
                _bad_call(qualname, names, base.keys() | dict(factories).keys(), args, kwargs)
            values.update(kwargs)
        for name, factory in factories:
            if name not in values:
                values[name] = factory()
        if len(values) != n:
            _bad_call(qualname, names, base.keys() | dict(factories).keys(), args, kwargs)
        self.__dict__.update(values)

    # a tuple of the field values, built in C (attrgetter of several names returns a tuple)
    values_of = attrgetter(*names) if n > 1 else (lambda o: tuple(getattr(o, x) for x in names))

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(values_of(self) == values_of(other))  # tuples: `is` before `==`, as dataclasses

    def __hash__(self: Any) -> int:
        return hash(values_of(self))

    made = {"__init__": __init__, "__eq__": __eq__, "__hash__": __hash__}
    for name, fn in made.items():
        fn.__qualname__ = f"{qualname}.{name}"
    return made


def _bad_call(qualname: str, names: tuple[str, ...], optional: set[str], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
    """The TypeError Python gives for a call that does not fit the signature."""
    if len(args) > len(names):
        raise TypeError(f"{qualname}.__init__() takes {len(names) + 1} positional arguments but {len(args) + 1} "
                        "were given")
    for key in kwargs:
        if key not in names:
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {key!r}")
        if names.index(key) < len(args):
            raise TypeError(f"{qualname}.__init__() got multiple values for argument {key!r}")
    given = set(names[:len(args)]) | set(kwargs) | optional
    missing = ", ".join(repr(x) for x in names if x not in given)
    raise TypeError(f"{qualname}.__init__() missing required argument(s): {missing}")


def _repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        d = self.__dict__
        return f"{type(self).__qualname__}({', '.join(f'{n}={d[n]!r}' for n in names)})"
    return __repr__


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def is_record(obj: object) -> bool:
    return hasattr(obj, "__record_fields__")


def fields(obj: object) -> tuple[Field, ...]:
    try:
        return obj.__record_fields__  # type: ignore[attr-defined, no-any-return]
    except AttributeError:
        raise TypeError("fields() needs a record class or instance") from None


def replace(obj: T, **changes: Any) -> T:
    """A copy with `changes` (dataclasses.replace; also accepts real dataclasses)."""
    if not is_record(obj):
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    d = obj.__dict__
    return obj.__class__(**{f.name: changes.pop(f.name) if f.name in changes else d[f.name]  # type: ignore[call-arg]
                            for f in fields(obj)}, **changes)


def asdict(obj: object) -> dict[str, Any]:
    """Fields as a dict, recursing into records, dataclasses, lists, tuples and dicts (dataclasses.asdict)."""
    if not is_record(obj):
        import dataclasses

        return dataclasses.asdict(obj)  # type: ignore[call-overload, no-any-return]
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _plain(v: Any) -> Any:
    if is_record(v):
        return asdict(v)
    if hasattr(type(v), "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(v)
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return type(v)(*[_plain(x) for x in v])
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return type(v)((_plain(k), _plain(x)) for k, x in v.items())
    import copy

    return copy.deepcopy(v)

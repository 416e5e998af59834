"""`@record`: the part of `@dataclass` the scanner's hot path uses (init, repr, eq, frozen, hash, field
defaults and factories, replace, asdict, fields), without its start-up cost.

`import dataclasses` pulls in inspect, ast and dis, and each decorated class is built by generating and
exec-ing source: about 4 million instructions per class, a third of a one-file scan's CPU for ~35 classes.
Here a class costs a dict of its annotations; methods are shared closures.
"""

from __future__ import annotations

from collections.abc import Callable
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
    own = cls.__dict__
    if "__init__" not in own:
        cls.__init__ = _init(cls.__qualname__, fields_)  # type: ignore[misc]
    if "__repr__" not in own:
        cls.__repr__ = _repr(names)  # type: ignore[assignment]
    if "__eq__" not in own:
        cls.__eq__ = _eq(names)  # type: ignore[assignment]
    if "__hash__" not in own or own["__hash__"] is None:
        # as dataclasses: eq + frozen hashes the fields, eq alone makes instances unhashable
        cls.__hash__ = _hash(names) if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    return cls


def _init(qualname: str, fields_: list[Field]) -> Callable[..., None]:
    names = tuple(f.name for f in fields_)
    defaults = {f.name: f.default for f in fields_ if f.default is not _MISSING}
    factories = {f.name: f.default_factory for f in fields_ if f.default_factory is not _MISSING}
    n = len(names)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > n:
            raise TypeError(f"{qualname}.__init__() takes {n + 1} positional arguments but {len(args) + 1} were given")
        values = dict(zip(names, args, strict=False))
        for name in names[len(args):]:
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif name in defaults:
                values[name] = defaults[name]
            elif name in factories:
                values[name] = factories[name]()
            else:
                raise TypeError(f"{qualname}.__init__() missing required argument: {name!r}")
        for name in kwargs:
            if name in values:
                raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {name!r}")
        self.__dict__.update(values)

    return __init__


def _repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        d = self.__dict__
        return f"{type(self).__qualname__}({', '.join(f'{n}={d[n]!r}' for n in names)})"
    return __repr__


def _eq(names: tuple[str, ...]) -> Callable[[Any, object], bool]:
    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        a, b = self.__dict__, other.__dict__
        return tuple(a[n] for n in names) == tuple(b[n] for n in names)  # tuples: `is` before `==`, as dataclasses
    return __eq__


def _hash(names: tuple[str, ...]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        d = self.__dict__
        return hash(tuple(d[n] for n in names))
    return __hash__


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

"""Immutable records written like typing.NamedTuple classes, without typing or namedtuple.

The one record convention of nspawn: what never changes once made (a config, a plan, a table
row) is a record; what is filled in as work goes (a Result, a job's result, a journal) is a
plain class. No dataclasses.

`@record` turns a class of annotated fields (defaults last) and methods into a tuple subclass
with what collections.namedtuple gives (attributes by position, _replace, _asdict, _make,
_fields, _field_defaults, the tuple's equality, hashing and immutability), built without
namedtuple: namedtuple compiles a __new__ for every class, 60-220 us each, and a launch
defines a dozen records before it starts a container; importing typing costs 3 ms more. Like
NamedTuple it refuses methods that use super() or __class__, which would name the class as
written, not the record.

`to_plain` and `from_plain` carry a record, and what it holds, through marshal's types to a
process that has the same record classes (the fork server's): a record becomes the list ["r",
its class's name, *its fields], a tuple ["t", *its items], a list ["l", *its items]; dicts and
scalars stay as they are. Lists, not tuples: a batch encodes a launch per job, and in tuples
that grew its launcher by 0.8 MiB over the first few hundred jobs (the interpreter keeps freed
tuples for reuse, by length), in lists not at all.
"""

from __future__ import annotations

from _collections import _tuplegetter  # namedtuple's own C field accessor

_CLASSES: dict[str, type] = {}  # every record class, by module and name, for from_plain


def record(cls: type) -> type:
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    if any(name not in defaults for name in names[len(names) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    if any("__class__" in getattr(getattr(v, "__code__", None), "co_freevars", ()) for v in cls.__dict__.values()):
        raise TypeError(f"{cls.__name__}: a record's methods cannot use super() or __class__")
    count = len(names)
    title = cls.__name__

    def __new__(kind, /, *args, **kwargs):
        if len(args) > count:
            raise TypeError(f"{title}() takes {count} arguments but {len(args)} were given")
        values = list(args)
        for name in names[len(args):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            elif name in defaults:
                values.append(defaults[name])
            else:
                raise TypeError(f"{title}() missing required argument: {name!r}")
        if kwargs:
            raise TypeError(f"{title}() got unexpected or repeated arguments: {', '.join(map(repr, kwargs))}")
        return tuple.__new__(kind, values)

    def _replace(self, /, **changes):
        made = tuple.__new__(type(self), [changes.pop(name, value) for name, value in zip(names, self)])
        if changes:
            raise TypeError(f"{title}: no fields {', '.join(map(repr, changes))}")
        return made

    def _asdict(self) -> dict:
        return dict(zip(names, self))

    def __repr__(self) -> str:
        return f"{title}(" + ", ".join(f"{name}={value!r}" for name, value in zip(names, self)) + ")"

    def __getnewargs__(self):
        return tuple(self)

    body = {key: value for key, value in cls.__dict__.items()
            if key not in names and key not in ("__dict__", "__weakref__")}
    body.update(__slots__=(), __new__=__new__, _replace=_replace, _asdict=_asdict, __getnewargs__=__getnewargs__,
                _make=classmethod(lambda kind, iterable: tuple.__new__(kind, iterable)),
                _fields=names, _field_defaults=defaults, __match_args__=names)
    body.setdefault("__repr__", __repr__)
    body.update((name, _tuplegetter(index, f"Alias for field number {index}")) for index, name in enumerate(names))
    body["_key"] = key = f"{cls.__module__}.{cls.__qualname__}"
    made = _CLASSES[key] = type(cls.__name__, (tuple,), body)
    return made


def to_plain(value):
    """`value` in marshal's types (see the module's docstring)."""
    kind = type(value)
    if kind is tuple:
        return ["t", *map(to_plain, value)]
    if kind is list:
        return ["l", *map(to_plain, value)]
    if kind is dict:
        return {key: to_plain(item) for key, item in value.items()}
    key = getattr(kind, "_key", None)
    if key is not None and _CLASSES.get(key) is kind:
        return ["r", key, *map(to_plain, value)]
    return value


def from_plain(value):
    """What to_plain made `value` of, made again."""
    kind = type(value)
    if kind is list:
        tag = value[0]
        if tag == "r":
            return tuple.__new__(_CLASSES[value[1]], [from_plain(item) for item in value[2:]])
        items = [from_plain(item) for item in value[1:]]
        return tuple(items) if tag == "t" else items
    if kind is dict:
        return {key: from_plain(item) for key, item in value.items()}
    return value

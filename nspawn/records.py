"""Immutable records written like typing.NamedTuple classes, without importing typing.

Importing typing costs every launch about 3 ms, a twentieth of a no-op run, and the run path
needs nothing else from it. `@record` turns a class of annotated fields (defaults last, as
NamedTuple requires) and methods into a collections.namedtuple subclass: the same tuple, with
_replace, _asdict and _fields, the same equality and the same immutability. Like NamedTuple it
refuses methods that use super() or __class__, which would name the class as written.
"""

from __future__ import annotations

import collections


def record(cls: type) -> type:
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[name] for name in names if name in cls.__dict__]
    if any(name not in cls.__dict__ for name in names[len(names) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    if any("__class__" in getattr(getattr(v, "__code__", None), "co_freevars", ()) for v in cls.__dict__.values()):
        # super() and __class__ in a method name the class written, which the record is not.
        raise TypeError(f"{cls.__name__}: a record's methods cannot use super() or __class__")
    base = collections.namedtuple(cls.__name__, names, defaults=defaults, module=cls.__module__)
    body = {key: value for key, value in cls.__dict__.items()
            if key not in names and key not in ("__dict__", "__weakref__")}
    body["__slots__"] = ()
    return type(cls.__name__, (base,), body)

"""@record: the NamedTuple behaviour the config and plans rely on, without typing."""

from __future__ import annotations

import pytest

from nspawn.records import record


@record
class Point:
    """A doc that stays."""

    x: int
    y: int = 0
    tags: tuple = ()

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


def test_fields_defaults_methods_and_tuple_behaviour():
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, ()) and Point._fields == ("x", "y", "tags")
    assert p.moved(2) == Point(3) == (3, 0, ()) and p._asdict() == {"x": 1, "y": 0, "tags": ()}
    assert Point.__doc__ == "A doc that stays." and repr(p) == "Point(x=1, y=0, tags=())"
    assert Point.__module__ == __name__ and hash(p) == hash((1, 0, ()))


def test_it_is_immutable():
    with pytest.raises(AttributeError):
        Point(1).x = 2
    with pytest.raises(AttributeError):
        Point(1).z = 2  # no instance dict to add to


def test_a_field_without_a_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="without a default follows"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_a_method_using_super_is_refused():
    with pytest.raises(TypeError, match="super"):
        @record
        class Bad:
            a: int = 0

            def __repr__(self) -> str:
                return super().__repr__()


def test_arguments_are_checked_as_namedtuple_checks_them():
    with pytest.raises(TypeError, match="missing required argument: 'x'"):
        Point()
    with pytest.raises(TypeError, match="repeated"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        Point(1, 2, (), 4)
    with pytest.raises(TypeError, match="no fields 'z'"):
        Point(1)._replace(z=3)
    assert Point._make([1, 2, ()]) == Point(1, 2) and Point._field_defaults == {"y": 0, "tags": ()}


def test_a_field_may_be_called_kind_or_self():
    @record
    class Odd:
        kind: str
        self: int = 0

    assert Odd(kind="k", self=1)._replace(kind="j") == ("j", 1)


@record
class Inner:
    name: str
    sizes: tuple = ()


def test_to_plain_and_back_through_marshal_keeps_every_type():
    """What the fork server receives is what the launcher sent: records by class, tuples as
    tuples, lists as lists, and what they hold."""
    import marshal

    from nspawn.records import from_plain, to_plain

    value = Point(1, 2, (Inner("a", (1, 2)), [Inner("b"), ("x", None)], {"k": Inner("c", ([],))},
                         frozenset({"f"}), b"\0bytes", 1.5, True))
    back = from_plain(marshal.loads(marshal.dumps(to_plain(value))))
    assert back == value and type(back) is Point
    inner, listed, mapping = back.tags[0], back.tags[1], back.tags[2]
    assert type(inner) is Inner and type(inner.sizes) is tuple
    assert type(listed) is list and type(listed[0]) is Inner and type(listed[1]) is tuple
    assert type(mapping["k"]) is Inner and type(mapping["k"].sizes[0]) is list
    # a plain list that looks like an encoded record stays a list
    looks = ["r", f"{__name__}.Inner", "z", ()]
    assert from_plain(marshal.loads(marshal.dumps(to_plain(looks)))) == looks

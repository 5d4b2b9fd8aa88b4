"""The typed, immutable config every backend plans from, made from the field table
(fields.py): a Config attribute per field, the limits gathered in Config.limits.

Paths are kept as the strings the user wrote, normalised for their flavour: host paths made
absolute (relative ones against the config file's directory) and container paths checked
absolute in the target's flavour (Windows for HCS, POSIX for Linux). Whole numbers are ints
(512.0 in a file is 512).
"""

from __future__ import annotations

from types import MappingProxyType

from nspawn.config.fields import FIELDS, MOUNT_FIELDS, REQUIRED, TMPFS_FIELDS
from nspawn.records import record


def absent(field):
    """The model's value for a field the config leaves out."""
    if field.default is not None:
        return field.default
    if field.limit:
        return 0  # no limit
    kind = field.schema.get("type")
    if kind == "array":
        return ()
    if kind == "object":
        return MappingProxyType({})
    return None


def _record(name: str, fields, extra=(), methods=None):
    """A record class with an attribute per field (those without a default first, as
    records need), then the `extra` (name, default) pairs."""
    pairs = [(f.name, None if f.key in REQUIRED else absent(f)) for f in fields]
    pairs.sort(key=lambda pair: pair[0] not in REQUIRED)
    pairs += list(extra)
    namespace = {"__annotations__": {n: "object" for n, _ in pairs}, "__module__": __name__,
                 "__qualname__": name, **(methods or {})}
    namespace.update((n, d) for n, d in pairs if n not in REQUIRED)
    return record(type(name, (), namespace))


def _asked(self) -> dict:
    """The limits the config sets, by field name."""
    return {name: v for name, v in self._asdict().items() if v}


def _replace_config(self, **changes):
    return self._replace(**changes)


# Records (nspawn.records) rather than frozen dataclasses: as immutable, and several
# milliseconds cheaper to define, which every launch pays.
Mount = _record("Mount", MOUNT_FIELDS)
Tmpfs = _record("Tmpfs", TMPFS_FIELDS)
ITEMS = {"mounts": Mount, "tmpfs": Tmpfs}  # the record of each array-of-objects field's items
Limits = _record("Limits", [f for f in FIELDS if f.limit], methods={"asked": _asked})
Config = _record(
    "Config", [f for f in FIELDS if not f.limit],
    extra=(("limits", Limits()),
           ("source", "command line"),  # where it came from, for messages
           ("flavour", "posix"),  # of the container paths: "posix" or "windows"
           ("resolved_image", None)),  # the image's nspawn.images.use.ResolvedImage, once resolved
    methods={"replace": _replace_config},
)

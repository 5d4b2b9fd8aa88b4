"""The parameter types the commands share, and the `run` option each field of the field table
(nspawn/config/fields.py) is given by: its `option.param` names one of PARAMS below, which
reads bounds, choices and unit from the field."""

from __future__ import annotations

import os
import re

import click

from nspawn.config.fields import INT64_MAX, MASK_HEX_DIGITS
from nspawn.units import MIB

_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Patterns as strings, compiled on first use (re caches them): `run --help` needs none.
_SIZE = r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*"
_DURATION = r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*"
UNIT_BYTES = {"MiB": MIB, "bytes": 1}  # a size field's unit, in bytes
UNIT_NAMES = {MIB: "MiB", 1: "byte"}  # a unit, said of one


class Size(click.ParamType):
    """A size such as 512, 512M or 1.5G, converted to `unit` bytes (plain numbers are already in it)."""

    name = "size"

    def __init__(self, unit: int):
        self.unit = unit

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = re.fullmatch(_SIZE, value, re.IGNORECASE)
        if not m:
            self.fail(f"{value!r}; expected a number with an optional K, M, G or T suffix", param, ctx)
        number, suffix = float(m.group(1)), m.group(2).lower()
        converted = int(number * _SUFFIXES[suffix] / self.unit) if suffix else int(number)
        if converted == 0 and number > 0:
            # 0 means no limit: a small size must not turn into none without a word.
            self.fail(f"{value!r} is less than 1 {UNIT_NAMES[self.unit]}, which would mean no limit at all; give at "
                      f"least 1 {UNIT_NAMES[self.unit]} (or 0 for no limit)", param, ctx)
        return converted


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        m = re.fullmatch(_DURATION, value)
        if not m:
            self.fail(f"{value!r}; expected seconds, or a number with ms, s, m or h", param, ctx)
        return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


class CpuMask(click.ParamType):
    """An affinity mask: 0x3, or a CPU list such as 0-3,6."""

    name = "mask"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = value.strip()
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            if len(text) - 2 > MASK_HEX_DIGITS:
                self.fail(f"{text[:12]}…: {len(text) - 2} hex digits; expected at most {MASK_HEX_DIGITS}", param, ctx)
            return int(text, 16)
        if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
            mask = 0
            for part in text.split(","):
                low, _, high = part.partition("-")
                if len(high or low) > 5 or int(high or low) >= MASK_HEX_DIGITS * 4:
                    self.fail(f"{value!r}: CPU {high or low} is beyond {MASK_HEX_DIGITS * 4 - 1}, the last a mask names", param, ctx)
                if int(high or low) < int(low):
                    self.fail(f"{value!r}: the range {part} is empty (its first CPU is above its last); "
                              f"write it {high}-{low}", param, ctx)
                for cpu in range(int(low), int(high or low) + 1):
                    mask |= 1 << cpu
            return mask
        self.fail(f"{value!r}; expected a hex mask such as 0x3 or a CPU list such as 0-3,6", param, ctx)


class HostPath(click.ParamType):
    """A host path, made absolute: on the command line relative paths are against the working
    directory (in a file, against the file's)."""

    name = "text"  # the help's metavar, as for any text

    def convert(self, value, param, ctx):
        return absolute(value)


class Profile(HostPath):
    """One of a field's keywords as it is, or else a host path made absolute."""

    def __init__(self, keywords: tuple):
        self.keywords = keywords

    def convert(self, value, param, ctx):
        return value if value in self.keywords else super().convert(value, param, ctx)


class Bind(click.ParamType):
    """SRC[:DST][:ro|rw] (ro/rw in any case; SRC and DST may be Windows paths with a drive
    letter): without DST the directory appears at the same path inside. `read_only` is the
    default when neither ro nor rw is given (--bind-ro)."""

    name = "src[:dst][:ro]"

    def __init__(self, read_only: bool = False):
        self.read_only = read_only

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        m = re.fullmatch(r"(?P<src>(?:[A-Za-z]:)?[^:]+)(?::(?P<dst>(?:[A-Za-z]:)?[^:]+?))??(?::(?P<mode>ro|rw))?",
                         value, re.IGNORECASE)
        if not m:
            self.fail(f"{value!r}; expected HOST_PATH, HOST_PATH:CONTAINER_PATH or either with :ro or :rw", param, ctx)
        source = absolute(m.group("src"))
        mode = (m.group("mode") or "").lower()
        return {"host_path": source, "container_path": m.group("dst") or source,
                "read_only": mode == "ro" if mode else self.read_only}


class Tmpfs(click.ParamType):
    """PATH[:SIZE]: an in-memory file system at a container path, SIZE as --memory takes it."""

    name = "path[:size]"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        path, _, size = value.rpartition(":") if ":" in value else (value, "", "")
        return {"container_path": path, "size_mb": Size(MIB).convert(size, param, ctx) if size else 0}


class Number(click.FloatRange):
    """A number within the field's bounds, and finite: FloatRange lets nan through its bounds
    (every comparison with it is false), and a file's JSON cannot hold one at all."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def absolute(path: str) -> str:
    """A command-line host path made absolute against the working directory (Windows ones stay as given)."""
    return path if re.match(r"^(?:[A-Za-z]:|\\\\)", path) or os.path.isabs(path) else os.path.abspath(path)


def host_value(name: str) -> str | None:
    """The launcher's own value of NAME, for `-E NAME` and a bare NAME in an --env-file."""
    return os.environ.get(name)


def setenv(ctx, param, values):
    """-E NAME=VALUE, or -E NAME for the host's value of NAME, repeated, as the environment mapping."""
    env = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not name:
            raise click.BadParameter(f"{item!r}; expected NAME=VALUE, or NAME for this host's value", ctx, param)
        if not sep:
            value = host_value(name)
            if value is None:
                raise click.BadParameter(f"{name!r} is not set on this host, so there is no value to pass; "
                                         f"give one with {name}=VALUE", ctx, param)
        env[name] = value
    return env


def env_file(ctx, param, paths):
    """--env-file FILE, repeated, in docker's format: NAME=VALUE lines (the value as written,
    quotes and all), `#` comment lines, blank lines; a bare NAME takes this host's value. The
    environment mapping, later files over earlier ones; a bad line is named by file and line."""
    env = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"{path}: cannot read it: {getattr(e, 'strerror', None) or e}", ctx, param)
        for number, line in enumerate(lines, 1):
            text = line.lstrip()
            if not text or text.startswith("#"):
                continue
            name, sep, value = text.partition("=")
            where = f"{path}:{number}"
            if not name or name != name.strip() or any(c.isspace() or c == "\0" for c in name):
                raise click.BadParameter(f"{where}: {line!r}; expected NAME=VALUE or NAME (no spaces in NAME)",
                                         ctx, param)
            if not sep:
                value = host_value(name)
                if value is None:
                    raise click.BadParameter(f"{where}: {name} is not set on this host, so there is no value "
                                             "to pass; give one with NAME=VALUE", ctx, param)
            env[name] = value
    return env


def open_fd(ctx, param, fd):
    """--json-fd: a descriptor this launcher was started with (checked before the run, so that
    a mistyped number costs no run; one that does not take the write is said after it)."""
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError:
            raise click.BadParameter(f"{fd} is not an open descriptor of this launcher", ctx, param) from None
    return fd


def _bounds(field) -> dict:
    # INT64_MAX is the integers' own ceiling in the schema, not a bound worth stating in the
    # help; the schema still refuses more, blaming the command line.
    maximum = field.schema.get("maximum")
    return {"min": field.schema.get("minimum"), "max": None if maximum == INT64_MAX else maximum}


# option.param -> the click.option keywords for a field.
PARAMS = {
    "text": lambda field: {},
    "host_path": lambda field: {"type": HostPath()},
    "profile": lambda field: {"type": Profile(field.keywords)},
    "flag": lambda field: {"is_flag": True, "default": None},
    "bind": lambda field: {"type": Bind()},
    "tmpfs": lambda field: {"type": Tmpfs()},
    "setenv": lambda field: {"callback": setenv},
    "size": lambda field: {"type": Size(UNIT_BYTES[field.unit])},
    "integer": lambda field: {"type": click.IntRange(**_bounds(field))},
    "number": lambda field: {"type": Number(**_bounds(field))},
    "duration": lambda field: {"type": Duration()},
    "cpu_mask": lambda field: {"type": CpuMask()},
    "choice": lambda field: {"type": click.Choice(field.schema["enum"])},
    "switch": lambda field: {"flag_value": "always", "default": None},
}


def field_option(field):
    """The click.option decorator giving `field` on the command line, its value under the field's key."""
    option = field.option
    return click.option(*option.flags, field.key, help=option.help, multiple=field.additive,
                        **PARAMS[option.param](field))

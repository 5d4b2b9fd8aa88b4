"""Config file → validated document: decoding, JSON parsing and the JSON Schema.

Every problem found is reported at once, each naming the file, the field as a JSON path, the
line and column, what was found and what was expected. The schema verdict for a given file
content is cached by hash, because importing jsonschema costs more than the launch itself;
and so is the parsed document of a file, by its bytes, in marshal's format: the json package
brings re and costs a repeated run milliseconds it need not pay.
"""

from __future__ import annotations

import marshal
import math
import os

from nspawn import __version__, exitcodes
from nspawn.errors import ConfigError, Problem
from nspawn.records import record

try:  # hashlib's SHA-256 without hashlib's OpenSSL start-up (3-5 ms); resolved once, as a failed
    from _sha256 import sha256  # import is looked for again, along sys.path, each time it is tried
except ImportError:
    try:
        from _sha2 import sha256  # Python 3.12 and later
    except ImportError:
        from hashlib import sha256

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")
MAX_BYTES = 1 << 20


def schema_bytes() -> bytes:
    with open(SCHEMA_PATH, "rb") as f:
        return f.read()


def schema() -> dict:
    import json

    return json.loads(schema_bytes())


def read_document(path: str) -> tuple[dict, str]:
    """Read and check one config file; returns the document and its text."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError([Problem(path, "", f"cannot read the config file: {e.strerror}")]) from None
    return parse_document(data, path)


def parse_document(data: bytes, source: str) -> tuple[dict, str]:
    text = _decode(data, source)
    return cached_parse(data, lambda: _parse_json(text, source)), text


def cached_parse(data: bytes, parse):
    """The document `parse()` makes of the JSON `data`, from the cache of parsed documents when
    these bytes were parsed before (a config file, an image's record in the store)."""
    path = _parsed_path(data)
    if path is not None:
        try:
            with open(path, "rb") as f:
                return marshal.load(f)
        except (OSError, EOFError, ValueError, TypeError):
            pass  # not cached yet (or a cache file a crash left short): parsed below and cached again
    document = parse()
    if path is not None:
        _cache_parsed(path, document)
    return document


# marshal's version 2 writes no back-references (which follow reference counts) and always the
# same type codes: one document, one byte string, for the digest as for the cache.
_MARSHAL_VERSION = 2


def _parsed_path(data: bytes) -> str | None:
    directory = _cache_dir("parsed")
    if directory is None:
        return None
    h = sha256(__version__.encode())
    h.update(data)
    return os.path.join(directory, h.hexdigest())


def _cache_parsed(path: str, document) -> None:
    partial = f"{path}.{os.getpid()}.{id(document)}"  # unique per process and thread: batch jobs parse at once
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "wb") as f:
            marshal.dump(document, f, _MARSHAL_VERSION)
        os.replace(partial, path)  # whole or not at all
    except (OSError, ValueError):
        try:
            os.unlink(partial)
        except OSError:
            pass  # a read-only home only costs the next run the parse


def _decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BYTES:
        raise ConfigError([Problem(source, "", f"the file is larger than {MAX_BYTES} bytes; expected a config file")])
    try:
        text = data.decode("utf-8-sig")  # a BOM, as Windows editors write, is accepted
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [Problem(source, "", f"byte 0x{data[e.start]:02x} is not UTF-8; expected a UTF-8 JSON file", line, column)]
        ) from None
    if not text.strip():
        raise ConfigError([Problem(source, "", "the file is empty; expected a JSON object")])
    return text


class _Duplicate(Exception):
    def __init__(self, key: str):
        self.key = key


def _object(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal} is too large a number")
    return value


def _parse_json(text: str, source: str):
    import json

    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise ConfigError([Problem(source, "", f"not valid JSON: {e.msg}", e.lineno, e.colno)]) from None
    except RecursionError:
        raise ConfigError([Problem(source, "", "nested too deeply to be a config; expected a flat JSON object")]) from None
    except _Duplicate:
        raise ConfigError(_duplicate_problems(text, source)) from None
    except ValueError as e:  # NaN/Infinity, or an integer too long to convert
        raise ConfigError([Problem(source, "", f"not valid JSON: {e}")]) from None


def _duplicate_problems(text: str, source: str) -> list[Problem]:
    from nspawn.config.jsonpos import locate, path_text

    positions = locate(text)
    problems = []
    for path, offsets in positions.keys.items():
        for occurrence in range(1, len(offsets)):
            line, column = positions.of_key(path, occurrence)
            first, _ = positions.of_key(path, 0)
            problems.append(
                Problem(source, path_text(path), f"duplicate key (first given on line {first}); expected each key once", line, column)
            )
    return problems


# -- the schema -------------------------------------------------------------------------------

def cache_root() -> str:
    """Where nspawn keeps what it can make again: the schema verdicts, compiled seccomp filters."""
    return os.environ.get("NSPAWN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nspawn"
    )


def _cache_dir(kind: str) -> str | None:
    if os.environ.get("NSPAWN_NO_CACHE"):
        return None
    return os.path.join(cache_root(), kind)




def _digest(document) -> str | None:
    """The document's hash with the schema's, or None for one marshal cannot write (no JSON
    value then: it is checked, not remembered)."""
    try:
        encoded = marshal.dumps(document, _MARSHAL_VERSION)
    except ValueError:
        return None
    h = sha256(__version__.encode())
    h.update(schema_bytes())
    h.update(encoded)
    return h.hexdigest()


def check_schema(document) -> list[Finding]:
    """Schema findings for a document; a document once found valid is remembered by its hash."""
    directory = _cache_dir("valid")
    digest = _digest(document) if directory is not None else None
    if digest is None:
        directory = None
    marker = os.path.join(directory, digest) if directory is not None else None
    if marker is not None and os.path.exists(marker):
        return []
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    findings = [f for error in validator.iter_errors(document) for f in _describe(error)]
    if not findings and marker is not None:
        try:
            os.makedirs(directory, exist_ok=True)
            open(marker, "ab").close()
        except OSError:
            pass  # a read-only home only costs the next run the schema check
    return findings


@record
class Finding:
    """A problem at a place in the document, before it is given a file, line and column."""

    path: tuple
    message: str
    at_key: bool = False
    exit_code: int = exitcodes.USAGE


def locate_findings(findings: list[Finding], text: str | None, source: str, from_command_line=lambda path: False) -> list[Problem]:
    """Turn findings into problems naming the file (or the command line), line and column."""
    from nspawn.config.jsonpos import locate, path_text

    positions = None
    problems = []
    for f in findings:
        line = column = None
        where = source
        if from_command_line(f.path):
            where = "command line"
        elif text is not None:
            positions = positions or locate(text)
            found = positions.of_key(f.path) if f.at_key else positions.of_value(f.path)
            if found is None and f.path:  # a missing key: point at the object that lacks it
                found = positions.of_value(f.path[:-1])
            line, column = found or (None, None)
        problems.append(Problem(where, path_text(f.path), f.message, line, column, f.exit_code))
    problems.sort(key=lambda p: (p.source, p.line or 0, p.column or 0, p.path))
    return problems


def _describe(error) -> list[Finding]:
    path = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    if kind == "additionalProperties":
        import difflib

        known = list(error.schema.get("properties", {}))
        out = []
        for key in sorted(set(value) - set(known)):
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            expected = f'did you mean "{hint[0]}"?' if hint else "expected one of " + ", ".join(f'"{k}"' for k in known if k != "$schema")
            out.append(Finding(path + (key,), f"unknown key; {expected}", at_key=True))
        return out
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        return [Finding(path + (k,), f'missing; expected the required key "{k}"') for k in missing]
    if kind == "dependentRequired":
        return [
            Finding(path + (k,), f'set without "{need}"; expected "{need}" too', at_key=True)
            for k, needs in error.validator_value.items()
            if k in value
            for need in needs
            if need not in value
        ]
    return [Finding(path, f"found {_show(value)}; expected {_expected(error)}")]


_TYPE_NAMES = {"object": "a JSON object", "array": "an array", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _expected(error) -> str:
    kind, want = error.validator, error.validator_value
    if kind == "type":
        return " or ".join(_TYPE_NAMES.get(t, t) for t in ([want] if isinstance(want, str) else want))
    if kind == "minimum":
        return f"a value ≥ {want}"
    if kind == "maximum":
        return f"a value ≤ {want}"
    if kind == "minLength":
        return "a non-empty string"
    if kind == "maxLength":
        return f"at most {want} characters"
    if kind == "enum":
        import difflib

        found = error.instance
        hint = difflib.get_close_matches(found, [str(w) for w in want], n=1) if isinstance(found, str) else []
        import json

        listed = "one of " + ", ".join(json.dumps(w) for w in want)
        return f'{listed} (did you mean "{hint[0]}"?)' if hint else listed
    if kind == "pattern" and isinstance(error.instance, str) and "\0" in error.instance:
        return "text without NUL characters"
    if kind == "pattern" and error.absolute_path and error.absolute_path[-1] == "hostname":
        return "a host name of letters, digits and inner hyphens"
    if "propertyNames" in error.schema_path:
        return "variable names without '=' or NUL"
    if kind == "oneOf" and error.absolute_path and error.absolute_path[-1] == "cpu_affinity_hex":
        return 'a whole number ≥ 0 or a "0x…" hex string'
    description = error.schema.get("description")
    return description or error.message


def _show(value) -> str:
    import json

    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return "a JSON object" if isinstance(value, dict) else "an array"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False) if value else "an empty string"
    text = str(value)
    return text if len(text) <= 40 else f"a number of {len(text)} digits"

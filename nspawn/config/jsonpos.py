"""Where each key and value stands in a JSON text, for error messages.

The fast path parses with the stdlib's C decoder, which does not keep positions; this scanner
runs only when there is an error to report. It is iterative so that deeply nested input
cannot exhaust the stack, and it tolerates input the decoder rejected (it stops there).
"""

from __future__ import annotations

import bisect
import json
import re

Path = tuple  # of str (object keys) and int (array indices)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"[^\s,\]\}:]+")
_SPACE = re.compile(r"[\s]*")


def path_text(path: Path) -> str:
    """`$.mounts[1].container_path` style, as JSONPath writes it."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part):
            out += f".{part}"
        else:
            out += "[" + _quote(part) + "]"
    return out


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class Positions:
    def __init__(self, text: str):
        self.text = text
        self.values: dict = {}  # path -> offset of the value
        self.keys: dict = {}  # path -> [offsets of each occurrence of the key]
        self._lines: list = []

    def line_column(self, offset: int) -> tuple[int, int]:
        if not self._lines:
            self._lines = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_right(self._lines, offset)
        return line, offset - self._lines[line - 1] + 1

    def of_value(self, path: Path) -> tuple[int, int] | None:
        offset = self.values.get(tuple(path))
        return None if offset is None else self.line_column(offset)

    def of_key(self, path: Path, occurrence: int = 0) -> tuple[int, int] | None:
        offsets = self.keys.get(tuple(path))
        if not offsets:
            return self.of_value(path)
        return self.line_column(offsets[min(occurrence, len(offsets) - 1)])


def locate(text: str) -> Positions:
    pos = Positions(text)
    stack: list[list] = []  # frames: [kind, path, next index or pending key]
    i, n = 0, len(text)

    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()

    i = skip(i)
    expecting_value_at: Path | None = ()
    while i < n:
        ch = text[i]
        if expecting_value_at is not None:
            path = expecting_value_at
            pos.values.setdefault(path, i)
            expecting_value_at = None
            if ch == "{":
                stack.append(["obj", path, None])
                i = skip(i + 1)
                continue
            if ch == "[":
                stack.append(["arr", path, 0])
                i = skip(i + 1)
                if i < n and text[i] != "]":
                    expecting_value_at = path + (0,)
                continue
            m = (_STRING if ch == '"' else _SCALAR).match(text, i)
            if not m:
                break
            i = skip(m.end())
            continue
        if not stack:
            break
        frame = stack[-1]
        if ch in "]}":
            stack.pop()
            i = skip(i + 1)
        elif ch == ",":
            i = skip(i + 1)
            if frame[0] == "arr":
                frame[2] += 1
                expecting_value_at = frame[1] + (frame[2],)
        elif ch == '"' and frame[0] == "obj":
            m = _STRING.match(text, i)
            if not m:
                break
            key = _decode_key(m.group())
            pos.keys.setdefault(frame[1] + (key,), []).append(i)
            i = skip(m.end())
            if i < n and text[i] == ":":
                i = skip(i + 1)
                expecting_value_at = frame[1] + (key,)
                # a repeated key: the later value is the one the decoder keeps
                pos.values.pop(expecting_value_at, None)
        else:
            break
    return pos


def _decode_key(literal: str) -> str:
    try:
        return json.loads(literal)
    except ValueError:
        return literal[1:-1]

"""Windows command lines: an argument list encoded so that CommandLineToArgvW (and the
Microsoft C runtime) split it back to exactly the same list."""

from __future__ import annotations

import re

_NEEDS_QUOTES = re.compile(r'[ \t"]')
_BACKSLASHES_BEFORE_QUOTE = re.compile(r'(\\*)"')
_TRAILING_BACKSLASHES = re.compile(r"(\\+)$")


def quote_argument(arg: str) -> str:
    if arg == "":
        return '""'
    if not _NEEDS_QUOTES.search(arg):
        return arg  # backslashes not before a quote are literal
    escaped = _BACKSLASHES_BEFORE_QUOTE.sub(lambda m: m.group(1) * 2 + '\\"', arg)
    # The closing quote must not be escaped by the argument's own trailing backslashes.
    escaped = _TRAILING_BACKSLASHES.sub(lambda m: m.group(1) * 2, escaped)
    return f'"{escaped}"'


def program_problem(path: str) -> str | None:
    """What a program path must be and why, when this one cannot be argv[0]; None when it can.
    argv[0] is read without backslash processing, so a double quote in it cannot be escaped."""
    if '"' in path:
        return "a path without a double quote: a Windows command line cannot hold one in the program name"
    return None


def quote_program(path: str) -> str:
    """argv[0] is only quoted, never escaped (see program_problem)."""
    problem = program_problem(path)
    if problem:
        raise ValueError(f"found {path!r}; expected {problem}")
    return f'"{path}"' if (not path or re.search(r"[ \t]", path)) else path


def command_line(argv: list[str]) -> str:
    return " ".join([quote_program(argv[0])] + [quote_argument(a) for a in argv[1:]])

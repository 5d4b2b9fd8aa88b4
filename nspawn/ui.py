"""The launcher's own messages on stderr: rich on a terminal, plain lines otherwise.

rich is imported only when stderr is a terminal, so pipelines and CI pay nothing for it; where
it is not installed, a terminal gets the plain lines too.
"""

from __future__ import annotations

import os
import sys

from nspawn.backends.contract import NOTE, PHASE, WARNING

QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2


class Reporter:
    def __init__(self, verbosity: int = NORMAL, stream=None):
        self.verbosity = verbosity
        self.stream = stream or sys.stderr  # None when the launcher was started with stderr closed
        self._console = None
        if self.stream is not None and self.stream.isatty() and not os.environ.get("NO_COLOR") \
                and os.environ.get("TERM") != "dumb":
            try:
                from rich.console import Console
            except ImportError:  # an interpreter without rich: plain lines on the terminal too
                return
            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)

    @property
    def console(self):
        """The rich console on a terminal, else None (plain lines)."""
        return self._console

    def _emit(self, style: str, prefix: str, text: str) -> None:
        if self._console is not None:
            from rich.markup import escape

            self._console.print(f"[{style}]{prefix}[/]{escape(text)}")
        elif self.stream is not None:
            print(prefix + text, file=self.stream, flush=True)

    def error(self, text: str) -> None:
        self._emit("bold red", "error: ", text)

    def problems(self, problems) -> None:
        """Problems with an input (nspawn.errors.Problem), one error line each."""
        for problem in problems:
            self.error(str(problem))

    def warning(self, text: str) -> None:
        if self.verbosity > QUIET:
            self._emit("yellow", "warning: ", text)

    def info(self, text: str) -> None:
        if self.verbosity >= VERBOSE:
            self._emit("cyan", "nspawn: ", text)

    def debug(self, text: str) -> None:
        if self.verbosity >= DEBUG:
            self._emit("dim", "debug: ", text)

    def event(self, name: str, details: dict) -> None:
        """A Session listener."""
        if name == WARNING:
            self.warning(details["message"])
        elif name == PHASE:
            self.info(details["phase"] + "…")
        elif name == NOTE:
            self.info(details["message"])
        else:
            self.debug(f"{name}: {details}")

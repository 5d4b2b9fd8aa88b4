"""--junit FILE.xml in the JUnit XML format GitHub Actions (test-reporting actions), GitLab
(artifacts:reports:junit) and Jenkins (the junit step) read: one <testsuite> for the batch, a
<testcase> per job; a non-zero exit is a <failure>; a config refused, a launcher failure (exit
125) or a stop an <error>, a job that did not run <skipped>; the output's tail is the case's system-out/err."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from nspawn import exitcodes
from nspawn.batch.jobs import FAILED, INTERRUPTED, NOT_RUN, JobResult
from nspawn.batch.report import Spooled
from nspawn.batch.scheduler import Outcome

# XML 1.0 cannot carry these at all, escaped or not; a payload's output may hold any byte.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
TAIL_LINES = 200


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _tail(output: str) -> str:
    return _text("\n".join(output.splitlines()[-TAIL_LINES:]))


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def verdict(result: JobResult) -> str | None:
    """The case's child element: None (passed), "skipped", "error" or "failure"."""
    if result.status == NOT_RUN:
        return "skipped"
    if result.status == INTERRUPTED or (result.status == FAILED and (result.run is None or result.exit_code == exitcodes.LAUNCHER)):
        return "error"  # the job's verdict is unknown: it was refused, stopped, or the launcher failed
    return "failure" if result.status == FAILED else None


def _case(result: JobResult) -> ET.Element:
    case = ET.Element("testcase", name=_text(result.name), classname="nspawn.batch",
                      time=_seconds(result.duration), file=_text(result.config_path))
    message = _text(result.error or f"exit code {result.exit_code}")
    kind = verdict(result)
    if kind == "skipped":
        ET.SubElement(case, kind, message=message)
    elif kind is not None:
        what = "interrupted" if result.status == INTERRUPTED else f"exit {result.exit_code}"
        ET.SubElement(case, kind, message=message, type=what).text = message
    if result.stdout_tail:
        ET.SubElement(case, "system-out").text = _tail(result.stdout_tail)
    if result.stderr_tail:
        ET.SubElement(case, "system-err").text = _tail(result.stderr_tail)
    return case


_CASES = "nspawn-cases"  # where the cases go in the document's frame


class JUnit(Spooled):
    """The JUnit file: one <testsuite> whose <testcase>s, one per job in the jobs' order, are
    each serialized as the job ends, as ET.indent and ET.tostring of the whole tree would."""

    def __init__(self, path: str, total: int, name: str = "nspawn batch"):
        super().__init__(path, total)
        self.name = name
        self.verdicts = {"failure": 0, "error": 0, "skipped": 0, None: 0}

    def piece(self, result: JobResult) -> str:
        self.verdicts[verdict(result)] += 1
        case = _case(result)
        ET.indent(case, level=2)  # a case's level in the document: <testsuites>, <testsuite>, then the cases
        return ET.tostring(case, encoding="unicode")

    def text(self, outcome: Outcome, started: float, pieces: Iterator[str]) -> Iterator[str]:
        total = _seconds(time.time() - started)
        counts = {"tests": str(outcome.total), "failures": str(self.verdicts["failure"]), "errors": str(self.verdicts["error"])}
        root = ET.Element("testsuites", name=self.name, time=total, **counts)
        suite = ET.SubElement(root, "testsuite", name=self.name, time=total, skipped=str(self.verdicts["skipped"]),
                              timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), **counts)
        if outcome.total:
            ET.SubElement(suite, _CASES)
        ET.indent(root)
        frame = ET.tostring(root, encoding="unicode")
        before, _, after = frame.partition(f"<{_CASES} />")
        yield '<?xml version="1.0" encoding="UTF-8"?>\n' + before
        for n, piece in enumerate(pieces):
            yield ("\n    " if n else "") + piece
        yield after + "\n"

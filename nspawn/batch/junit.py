"""--junit FILE.xml in the JUnit XML format GitHub Actions (test-reporting actions), GitLab
(artifacts:reports:junit) and Jenkins (the junit step) read: one <testsuite> for the batch, a
<testcase> per job; a non-zero exit is a <failure>; a config refused, a launcher failure (exit
125) or a stop an <error>, a job that did not run <skipped>; the output's tail is the case's system-out/err."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

from nspawn import exitcodes
from nspawn.batch.jobs import FAILED, INTERRUPTED, NOT_RUN, JobResult
from nspawn.batch.report import write_atomically
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


def _case(suite: ET.Element, result: JobResult) -> None:
    case = ET.SubElement(suite, "testcase", name=_text(result.name), classname="nspawn.batch",
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


def document(outcome: Outcome, started: float, name: str = "nspawn batch") -> ET.Element:
    results = outcome.results
    verdicts = [verdict(r) for r in results]
    failures, errors, skipped = (verdicts.count(k) for k in ("failure", "error", "skipped"))
    total = _seconds(time.time() - started)
    counts = {"tests": str(len(results)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", name=name, time=total, **counts)
    suite = ET.SubElement(root, "testsuite", name=name, time=total, skipped=str(skipped),
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), **counts)
    for result in results:
        _case(suite, result)
    return root


def write_junit(path: str, outcome: Outcome, started: float) -> None:
    root = document(outcome, started)
    ET.indent(root)
    write_atomically(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")

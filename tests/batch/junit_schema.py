"""The rules of the JUnit XML schema Jenkins' junit step and GitLab's junit reports accept (the
Ant/Surefire format, as in Jenkins' junit-10.xsd), as a check that needs only the standard
library. Returns every violation found; an empty list means the document is valid."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

_INT = re.compile(r"^\d+$")
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")  # ISO 8601, no time zone

# element -> (required attributes, optional attributes, allowed children in order, {child: most allowed})
_RULES = {
    "testsuites": (set(), {"name", "time", "tests", "failures", "disabled", "errors"}, ["testsuite"], {}),
    "testsuite": ({"name", "tests"},
                  {"failures", "errors", "time", "disabled", "skipped", "timestamp", "hostname", "id", "package",
                   "file", "log", "url", "version", "group"},
                  ["properties", "testcase", "system-out", "system-err"],
                  {"properties": 1, "system-out": 1, "system-err": 1}),
    "testcase": ({"name"}, {"classname", "assertions", "time", "status", "group", "file", "line"},
                 ["skipped", "error", "failure", "system-out", "system-err"], {"skipped": 1}),
    "skipped": (set(), {"message"}, [], {}),
    "error": (set(), {"message", "type"}, [], {}),
    "failure": (set(), {"message", "type"}, [], {}),
    "system-out": (set(), set(), [], {}),
    "system-err": (set(), set(), [], {}),
    "properties": (set(), set(), ["property"], {}),
    "property": ({"name", "value"}, set(), [], {}),
}
_TYPES = {"tests": _INT, "failures": _INT, "errors": _INT, "skipped": _INT, "disabled": _INT,
          "assertions": _INT, "time": _DECIMAL, "timestamp": _DATETIME}


def violations(xml_text: str) -> list[str]:
    try:
        root = ET.fromstring(xml_text.encode())
    except ET.ParseError as e:
        return [f"not well-formed XML: {e}"]
    found: list[str] = []
    if root.tag != "testsuites":
        found.append(f"the root is <{root.tag}>, expected <testsuites>")
    _check(root, "/" + root.tag, found)
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        for attribute, child in (("tests", None), ("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            declared = suite.get(attribute)
            actual = len(cases) if child is None else sum(c.find(child) is not None for c in cases)
            if declared is not None and _INT.match(declared) and int(declared) != actual:
                found.append(f"testsuite {suite.get('name')!r}: {attribute}={declared} but {actual} test cases say so")
    return found


def _check(element: ET.Element, where: str, found: list[str]) -> None:
    rules = _RULES.get(element.tag)
    if rules is None:
        found.append(f"{where}: <{element.tag}> is not a JUnit element")
        return
    required, optional, children, most = rules
    for name in required - set(element.attrib):
        found.append(f"{where}: missing attribute {name}")
    for name, value in element.attrib.items():
        if name not in required | optional:
            found.append(f"{where}: attribute {name} is not allowed")
        elif name in _TYPES and not _TYPES[name].match(value):
            found.append(f"{where}: {name}={value!r} is not a valid {_TYPES[name].pattern}")
    if not children and len(element):
        found.append(f"{where}: <{element.tag}> holds elements; expected text only")
    order = -1
    for child in element:
        if child.tag not in children:
            found.append(f"{where}: <{child.tag}> is not allowed in <{element.tag}>")
            continue
        position = children.index(child.tag)
        # testcase's results (skipped, error, failure) may come in any order; the rest follow the sequence
        rank = min(position, 1) if element.tag == "testcase" and position <= 2 else position
        if rank < order:
            found.append(f"{where}: <{child.tag}> is out of order")
        order = max(order, rank)
        _check(child, f"{where}/{child.tag}", found)
    for tag, limit in most.items():
        if len(element.findall(tag)) > limit:
            found.append(f"{where}: more than {limit} <{tag}>")

"""The one way a config is made: file and command-line overrides → validated Config."""

from __future__ import annotations

import os

from nspawn import backends
from nspawn.config.build import build_config
from nspawn.config.fields import BY_KEY
from nspawn.config.host import host_findings
from nspawn.config.load import check_schema, locate_findings, parse_document, read_document
from nspawn.config.model import Config
from nspawn.errors import ConfigError



def load_config(path: str | None, overrides: dict | None = None, *, host: bool = False,
                data: bytes | None = None) -> Config:
    """Validate `path` (if any) with `overrides` (document keys, host paths already absolute)
    laid over it. File checks always run; host checks run when `host` is true. Raises
    ConfigError listing every problem, each located in the file or on the command line.
    `data`: the file's bytes as read elsewhere (a batch job sent to another machine), its
    relative host paths still relative to `path`'s directory."""
    overrides = overrides or {}
    if path is not None:
        document, text = read_document(path) if data is None else parse_document(data, path)
        source, base_dir = path, os.path.dirname(os.path.abspath(path))
    else:
        document, text, source, base_dir = {}, None, "command line", os.getcwd()

    if not isinstance(document, dict):
        _fail_on(check_schema(document), text, source, lambda p: False)
    merged = {**document, **overrides}
    additive = [key for key in overrides if key in BY_KEY and BY_KEY[key].additive]
    for key in additive:
        given = document.get(key)
        if isinstance(given, list):
            merged[key] = given + list(overrides[key])
        elif isinstance(given, dict):
            merged[key] = {**given, **overrides[key]}

    def from_command_line(p: tuple) -> bool:
        """Whether the value at path `p` came from the command line rather than the file."""
        if not p or p[0] not in overrides:
            return False
        given = document.get(p[0])
        if p[0] in additive and len(p) > 1 and isinstance(given, list):
            return p[1] >= len(given)
        if p[0] in additive and len(p) > 1 and isinstance(given, dict):
            return p[1] in overrides[p[0]]
        return True

    _fail_on(check_schema(merged), text, source, from_command_line)
    config, findings = build_config(merged, source, base_dir)
    findings += backends.load(config.backend).validate(config)
    _fail_on(findings, text, source, from_command_line)
    if host:
        _fail_on(host_findings(config), text, source, from_command_line)
    return config


def _fail_on(findings, text, source, from_command_line) -> None:
    if findings:
        raise ConfigError(locate_findings(findings, text, source, from_command_line))

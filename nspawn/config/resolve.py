"""The one way a config is made: file and command-line overrides → validated Config."""

from __future__ import annotations

import os

from nspawn.config.build import build_config
from nspawn.config.host import host_findings
from nspawn.config.load import check_schema, locate_findings, read_document
from nspawn.config.model import Config
from nspawn.errors import ConfigError

# Command-line values of these keys add to the file's instead of replacing them.
_ADDITIVE = ("mounts", "environment")


def load_config(path: str | None, overrides: dict | None = None, *, host: bool = False) -> Config:
    """Validate `path` (if any) with `overrides` (document keys, host paths already absolute)
    laid over it. File checks always run; host checks run when `host` is true. Raises
    ConfigError listing every problem, each located in the file or on the command line."""
    overrides = overrides or {}
    if path is not None:
        document, text = read_document(path)
        source, base_dir = path, os.path.dirname(os.path.abspath(path))
    else:
        document, text, source, base_dir = {}, None, "command line", os.getcwd()

    if not isinstance(document, dict):
        _fail_on(check_schema(document), text, source, lambda p: False)
    merged = {**document, **overrides}
    if "mounts" in overrides:
        merged["mounts"] = list(document.get("mounts", [])) + list(overrides["mounts"])
    if "environment" in overrides and isinstance(document.get("environment"), dict):
        merged["environment"] = {**document["environment"], **overrides["environment"]}

    def from_command_line(p: tuple) -> bool:
        if not p or p[0] not in overrides:
            return False
        if p[0] == "mounts":
            return len(p) < 2 or p[1] >= len(document.get("mounts", []))
        if p[0] == "environment":
            return len(p) < 2 or p[1] in overrides["environment"]
        return True

    _fail_on(check_schema(merged), text, source, from_command_line)
    config, findings = build_config(merged, source, base_dir)
    _fail_on(findings, text, source, from_command_line)
    if host:
        _fail_on(host_findings(config), text, source, from_command_line)
    return config


def _fail_on(findings, text, source, from_command_line) -> None:
    if findings:
        raise ConfigError(locate_findings(findings, text, source, from_command_line))

"""The one way a config is made: file and command-line overrides → validated Config."""

from __future__ import annotations

import os

from nspawn import backends
from nspawn.config.build import build_config
from nspawn.config.fields import BY_KEY
from nspawn.config.host import host_findings
from nspawn.config.load import Finding, check_schema, locate_findings, parse_document, read_document
from nspawn.config.model import Config
from nspawn.errors import ConfigError



def load_config(path: str | None, overrides: dict | None = None, *, host: bool = False,
                images: str | None = None, data: bytes | None = None) -> Config:
    """Validate `path` (if any) with `overrides` (document keys, host paths already absolute)
    laid over it. File checks always run; host checks run when `host` is true. An `image` is
    resolved in the store when `images` is "store" (the default with `host`), and pulled when
    the store lacks it if it is "pull"; its config's defaults then go under the document's
    values. `data`: the file's bytes as read elsewhere (a batch job sent to another machine),
    its relative host paths still relative to `path`'s directory. Raises ConfigError listing
    every problem, each located in the file or on the command line."""
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
    image = None
    if (images or host) and "image" in merged and "parent_layer_directory" not in merged:
        image, merged = _with_image(merged, images == "pull", not host, text, source, from_command_line)
    config, findings = build_config(merged, source, base_dir)
    if image is not None:
        config = config.replace(resolved_image=image)
        if config.process_executable is None:
            findings.append(Finding(("process_executable",), f"missing; expected it, as the image {image.reference} "
                                                             "names no Entrypoint or Cmd"))
    findings += backends.load(config.backend).validate(config)
    _fail_on(findings, text, source, from_command_line)
    if host:
        _fail_on(host_findings(config), text, source, from_command_line)
    return config


def _with_image(document: dict, pull: bool, dry_run: bool, text, source, from_command_line):
    """(ResolvedImage, the document with the image's defaults), or the image's problem; a
    reference the builder refuses is left to it. A dry run of an image the host lacks plans
    with placeholders for what the run's pull will tell (what validate accepts, a dry run
    shows)."""
    from nspawn.config.build import flavour
    from nspawn.errors import NspawnError
    from nspawn.images.reference import ReferenceError
    from nspawn.images.use import ENTRYPOINT, NotInStore, defaults, resolve, resolve_windows, unresolved

    windows = flavour(document) == "windows"
    try:
        if windows:
            image, image_config = resolve_windows(document["image"], document.get("isolation", "process"))
        else:
            image, image_config = resolve(document["image"], pull=pull)
    except ReferenceError:
        return None, document
    except NotInStore as e:
        if not dry_run:
            _fail_on([Finding(("image",), str(e))], text, source, from_command_line)
        image, image_config = unresolved(document["image"], windows), {}
        if "process_executable" not in document:
            document = {**document, "process_executable": ENTRYPOINT}
    except KeyboardInterrupt:
        from nspawn import exitcodes

        _fail_on([Finding(("image",), f"the pull of {document['image']} was interrupted; nothing of it is used, "
                                      "and the next pull goes on from the layers already complete",
                          exit_code=exitcodes.from_signal(2))], text, source, from_command_line)
    except (NspawnError, OSError) as e:  # a pull that failed
        from nspawn import exitcodes
        from nspawn.result import error_text

        why = error_text(e) if isinstance(e, OSError) else str(e)
        _fail_on([Finding(("image",), f"cannot pull {document['image']}: {why}",
                          exit_code=getattr(e, "exit_code", exitcodes.LAUNCHER))],
                 text, source, from_command_line)
    document = defaults(document, image_config, case_blind=windows)
    if windows:
        # HCS takes the image as its parent layer, whose layerchain.json names the rest: the
        # image then stands for parent_layer_directory, and the Config holds it as resolved_image.
        document = {k: v for k, v in document.items() if k != "image"}
        document["parent_layer_directory"] = image.diffs[0]
    return image, document


def _fail_on(findings, text, source, from_command_line) -> None:
    if findings:
        raise ConfigError(locate_findings(findings, text, source, from_command_line))

"""An image as a run uses it: the reference resolved in the store (pulled first when the run
allows it), and the image config's defaults laid under the config document's own values.

The defaults, as `docker run` takes them: Env under the config's environment; WorkingDir
when the config names no working_directory; Entrypoint and Cmd when it names no
process_executable (process_arguments alone replace Cmd, as `docker run IMAGE ARGS` does; a
process_executable replaces both, as `--entrypoint` does); User when the config names no user.
"""

from __future__ import annotations

import os
import stat
import sys

from nspawn.records import record


@record
class ResolvedImage:
    reference: str
    digest: str  # the manifest's
    layers: tuple  # host paths of the layers' short links, top layer first (overlay's lowerdir order)
    diffs: tuple  # host paths of the layers' diff directories, top first
    layer_digests: tuple  # top first
    user: str  # the image config's User (a default of the config's user)
    platform: str

    def to_json(self) -> dict:
        return {"reference": self.reference, "digest": self.digest, "platform": self.platform, "user": self.user,
                "layers": [{"digest": d, "path": p} for d, p in zip(self.layer_digests, self.diffs)]}


class NotInStore(LookupError):
    pass


AT_RUN_TIME = "<at run time>"
ENTRYPOINT = "<the image's Entrypoint and Cmd>"


def unresolved(text: str, windows: bool = False) -> ResolvedImage:
    """What a dry run shows of an image this host does not have yet (a Linux run pulls it):
    its digest and layers are placeholders, as other values known only at run time are; on
    Windows the parent layer's, a folder of Docker's windowsfilter store."""
    from nspawn.images.reference import parse

    ref = parse(text)
    layers = (f"<the layers of {ref} {AT_RUN_TIME}>",)
    if windows:
        from nspawn.config.derived import host_path_module
        from nspawn.images.hoststores import WINDOWS_DOCKER_ROOT

        root = os.environ.get("NSPAWN_DOCKER_ROOT") or WINDOWS_DOCKER_ROOT
        layers = (host_path_module(root).join(root, "windowsfilter", f"<its top layer {AT_RUN_TIME}>"),)
    return ResolvedImage(str(ref), AT_RUN_TIME, layers, layers, (), "", "")


def resolve(text: str, *, pull: bool, notify=None):
    """(ResolvedImage, image config dict) of reference `text`; pulled when absent and `pull`
    (saying so through `notify`), NotInStore otherwise. Raises ReferenceError for a bad
    reference and NspawnError/ManifestError for a failed pull."""
    from nspawn.images.reference import parse
    from nspawn.images.store import Store

    ref = parse(text)
    store = Store()
    record_ = store.lookup(str(ref))
    if record_ is None:
        from nspawn.images.hoststores import find

        found = find(ref)
        if found is not None:
            return _on_host(ref, *found)
        if not pull:
            raise NotInStore(f"{ref} is not in the image store {store.root}, nor in Docker's or Podman's; "
                             f"expected it pulled first (nspawn pull {text})")
        (notify or _stderr)(f"nspawn: {ref} is not in the store; pulling it")
        from nspawn.images.pull import pull as pull_image

        record_ = pull_image(ref, store)
    else:
        store.mark_used(record_["digest"])
    digests = tuple(layer["digest"] for layer in reversed(record_["layers"]))
    image = ResolvedImage(str(ref), record_["digest"], tuple(store.short_link(d) for d in digests),
                          tuple(store.layer_dir(d) + "/diff" for d in digests), digests,
                          record_["config"].get("User", ""), record_.get("platform", ""))
    return image, record_["config"]


def resolve_windows(text: str, isolation: str):
    """(ResolvedImage, image config dict) of a Windows image pulled into the store (its layers
    imported into the store's windowsfilter form), else of one in Docker's windowsfilter store;
    its top layer is the HCS backend's parent layer. On Windows a process-isolated container's
    image must be for the host's build: refused here, in words, before HCS refuses it in a code
    (a pull chose the host's build already)."""
    from nspawn.images.hoststores import docker, docker_root
    from nspawn.images.reference import parse
    from nspawn.images.store import Store, is_windows

    ref = parse(text)
    store = Store()
    pulled = store.lookup(str(ref))
    if pulled is not None and is_windows(pulled):
        store.mark_used(pulled["digest"])
        digests = tuple(layer["digest"] for layer in reversed(pulled["layers"]))
        folders = tuple(store.windows_layer_dir(d) for d in digests)
        return ResolvedImage(str(ref), pulled["digest"], folders, folders, digests, pulled["config"].get("User", ""),
                             pulled["platform"]), pulled["config"]
    found = docker(ref, driver="windowsfilter")
    if found is None:
        raise NotInStore(f"{ref} is not in the image store {store.root}, nor in Docker's windowsfilter store "
                         f"{docker_root()}; expected it pulled first (nspawn pull --platform windows/amd64 {text}, "
                         f"or docker pull {text})")
    image_id, layers, config = found
    if sys.platform == "win32" and isolation == "process" and config.get("os.version"):
        from nspawn.errors import NspawnError
        from nspawn.images.manifest import windows_build_of, windows_mismatch

        host_build = sys.getwindowsversion().build
        if windows_build_of(config["os.version"]) != host_build:
            raise NspawnError(windows_mismatch([config["os.version"]], host_build))
    return _on_host(ref, "docker windowsfilter", image_id, layers, config)


def _on_host(ref, store: str, image_id: str, layers: list, config: dict):
    """An image of Docker's or Podman's store, its layers used where they are."""
    run = config.get("config") or {}
    image_config = {key: run.get(key) for key in ("Env", "WorkingDir", "Entrypoint", "Cmd", "User")}
    platform = "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p)
    image = ResolvedImage(str(ref), image_id, tuple(link for _, link, _ in layers), tuple(diff for _, _, diff in layers),
                          tuple(digest for digest, _, _ in layers), str(run.get("User") or ""),
                          f"{platform} ({store} store)")
    return image, image_config


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def defaults(document: dict, image_config: dict, case_blind: bool = False) -> dict:
    """The document with the image config's defaults under its own values (Windows names its
    variables without regard to case: the document's Path then replaces the image's PATH)."""
    out = dict(document)
    env = {}
    given_names = {name.upper() for name in document.get("environment") or ()} if case_blind else set()
    for item in image_config.get("Env") or ():
        name, _, value = item.partition("=")
        if name and name.upper() not in given_names:
            env[name] = value
    if env:
        given = document.get("environment")
        out["environment"] = {**env, **given} if isinstance(given, dict) else (given if given is not None else env)
    if "working_directory" not in document and image_config.get("WorkingDir"):
        out["working_directory"] = image_config["WorkingDir"]
    if "user" not in document and image_config.get("User"):
        out["user"] = image_config["User"]
    if "process_executable" not in document:
        entrypoint = list(image_config.get("Entrypoint") or ())
        arguments = document.get("process_arguments")
        argv = entrypoint + (list(arguments) if isinstance(arguments, list) else list(image_config.get("Cmd") or ()))
        if argv:
            out["process_executable"], out["process_arguments"] = argv[0], argv[1:]
    return out


def lookup(diffs: tuple, path: str) -> str | None:
    """The host path behind absolute container path `path` in the overlay of `diffs` (top
    first), symbolic links followed as the container would; None when it is not there."""
    def find(parts: list) -> str | None:
        for diff in diffs:
            hidden = False
            for depth in range(1, len(parts) + 1):
                candidate = os.path.join(diff, *parts[:depth])
                try:
                    st = os.lstat(candidate)
                except OSError:
                    break
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None  # a whiteout hides it and everything below
                if depth == len(parts):
                    return candidate
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a file or link over the directory hides the lower layers' one
                try:
                    if os.getxattr(candidate, "trusted.overlay.opaque") == b"y":
                        hidden = True
                except OSError:
                    pass
            if hidden:
                # an opaque directory on the way: the lower layers have nothing below it
                return None
        return None

    from nspawn.config.host import follow

    return follow(path, find, diffs[0] if diffs else None)

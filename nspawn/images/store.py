"""The image store: content-addressed, each layer unpacked once into its own directory.

Layout under the root ($NSPAWN_STORE, else /var/lib/nspawn):
  layers/<hex>/diff        a layer unpacked in overlay's form, <hex> its blob's sha256
  layers/<hex>/layer.json  its digest, uncompressed digest and sizes
  l/<short>                a short link to layers/<hex>/diff: the mount names lower layers by
                           these, from inside l/, so that a hundred layers fit the page that
                           mount options get (as Docker's overlay2 does)
  windowsfilter/<hex>      a Windows layer imported through HCS (images/winlayer.py), with its
                           layerchain.json: the HCS backend's parent layer folder form
  images/<hex>.json        an image by its manifest's digest: its layers and run defaults
  images/<hex>.used        touched by each run that uses it
  refs/<quoted reference>  the manifest digest a reference names
  tmp/<pid>-<random>/      a pull's downloads and unpacking, renamed into place when verified
  locks/<hex>.lock         held while a layer is made, so that it is made once

Everything becomes visible by a rename of a complete, verified thing, and an image record is
written only after all its layers are in place: a pull cut short at any point leaves nothing
a run would use, and the next pull sweeps the dead pull's tmp/ entry.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

DEFAULT_ROOT = "/var/lib/nspawn"
# Windows has no O_CLOEXEC: Python makes every descriptor non-inheritable there already.
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HEX = frozenset("0123456789abcdef")
SHORT = 16  # hex digits of a layer's short link name: 64 bits, so names never collide in practice


def root() -> str:
    return os.environ.get("NSPAWN_STORE") or DEFAULT_ROOT


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


# A reference as a file name, and back: "%" first, so that the others' escapes stay apart. (Not
# urllib.parse: a run from the store reads one of these, and its import costs more than that.)
_ESCAPES = (("%", "%25"), ("/", "%2F"), (":", "%3A"), ("@", "%40"))


def ref_file(reference: str) -> str:
    for char, escaped in _ESCAPES:
        reference = reference.replace(char, escaped)
    return reference


def ref_of_file(name: str) -> str:
    for char, escaped in reversed(_ESCAPES):
        name = name.replace(escaped, char)
    return name


class Store:
    def __init__(self, path: str | None = None):
        self.root = path or root()

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def layer_dir(self, digest: str) -> str:
        return self.path("layers", hex_of(digest))

    def short_link(self, digest: str) -> str:
        return self.path("l", hex_of(digest)[:SHORT])

    def has_layer(self, digest: str) -> bool:
        return os.path.isdir(os.path.join(self.layer_dir(digest), "diff"))

    def windows_layer_dir(self, digest: str) -> str:
        return self.path("windowsfilter", hex_of(digest))

    def has_windows_layer(self, digest: str) -> bool:
        return os.path.isdir(self.windows_layer_dir(digest))

    def add_windows_layer(self, digest: str, imported: str) -> None:
        """Put the imported layer folder (with its layerchain.json) in place."""
        os.rename(imported, self.windows_layer_dir(digest))

    def windows_layers(self) -> list[str]:
        """The imported layers; not the containers' scratch layers, which the HCS backend makes
        beside their parent layer (as Docker's windowsfilter driver does) under their own names."""
        directory = self.path("windowsfilter")
        names = os.listdir(directory) if os.path.isdir(directory) else ()
        return ["sha256:" + name for name in names if len(name) == 64 and all(c in _HEX for c in name)]

    def remove_windows_layer(self, digest: str) -> None:
        """Out of sight first (a rename), then destroyed through HCS, which made it."""
        from nspawn.backends.hcs.native import computestorage
        from nspawn.backends.hcs.native.errors import HcsError
        from nspawn.images.unpack import LayerError

        doomed = os.path.join(self.temporary(), "layer")
        os.rename(self.windows_layer_dir(digest), doomed)
        try:
            computestorage.destroy_layer(doomed)
        except HcsError as e:
            raise LayerError(f"layer {digest} could not be deleted (it waits in {doomed}): {e}") from None
        os.rmdir(os.path.dirname(doomed))

    def prepare(self) -> None:
        for sub in ("layers", "l", "images", "refs", "tmp", "locks"):
            os.makedirs(self.path(sub), mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, name: str, shared: bool = False):
        fd = os.open(self.path("locks", name + ".lock"), os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o600)
        try:
            if _windows():
                from nspawn.backends.hcs.native import kernel32
                from nspawn.backends.hcs.native.loader import os_handle

                kernel32.lock_file(os_handle(fd), exclusive=not shared)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def temporary(self) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.path("tmp"))

    def sweep_tmp(self) -> list[str]:
        """Remove what pulls that died left in tmp/; returns what was removed."""
        import shutil

        removed = []
        for name in os.listdir(self.path("tmp")):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(self.path("tmp", name), ignore_errors=True)
                removed.append(name)
        return removed

    def add_layer(self, digest: str, made: str) -> None:
        """Put the complete layer directory `made` (holding diff/ and layer.json) in place."""
        self.ensure_link(digest)  # first: a link to nothing is harmless, a layer without its link is not
        os.rename(made, self.layer_dir(digest))

    def ensure_link(self, digest: str) -> None:
        link = self.short_link(digest)
        if not os.path.islink(link) or os.readlink(link) != self._link_target(digest):
            _atomic_symlink(self._link_target(digest), link)

    @staticmethod
    def _link_target(digest: str) -> str:
        return f"../layers/{hex_of(digest)}/diff"

    def layer_info(self, digest: str) -> dict:
        return _read_json(os.path.join(self.layer_dir(digest), "layer.json"))

    # Images and references.

    def put_image(self, record: dict) -> None:
        import json

        _atomic_write(self.path("images", hex_of(record["digest"]) + ".json"), json.dumps(record, indent=1))

    def image(self, digest: str) -> dict | None:
        try:
            return _read_json(self.path("images", hex_of(digest) + ".json"))
        except FileNotFoundError:
            return None

    def images(self) -> list[dict]:
        found = []
        for name in sorted(os.listdir(self.path("images"))) if os.path.isdir(self.path("images")) else ():
            if name.endswith(".json"):
                record = self.image("sha256:" + name[:-5])
                if record is not None:
                    found.append(record)
        return found

    def tag(self, reference: str, digest: str) -> None:
        _atomic_write(self.path("refs", ref_file(reference)), digest)

    def untag(self, reference: str) -> bool:
        try:
            os.unlink(self.path("refs", ref_file(reference)))
            return True
        except FileNotFoundError:
            return False

    def refs(self) -> dict:
        """reference → manifest digest."""
        found = {}
        directory = self.path("refs")
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    found[ref_of_file(name)] = f.read().strip()
            except FileNotFoundError:
                continue
        return found

    def lookup(self, reference: str) -> dict | None:
        """The complete image a reference names here, or None."""
        try:
            with open(self.path("refs", ref_file(reference)), encoding="utf-8") as f:
                digest = f.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        record = self.image(digest)
        if record is None:
            return None
        has = self.has_windows_layer if is_windows(record) else self.has_layer
        if not all(has(layer["digest"]) for layer in record["layers"]):
            return None
        return record

    def mark_used(self, digest: str) -> None:
        """For `nspawn images`; a store this launcher cannot write to only loses the date."""
        path = self.path("images", hex_of(digest) + ".used")
        try:
            os.utime(path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | _CLOEXEC, 0o600))
        except OSError:
            pass

    def last_used(self, digest: str) -> float | None:
        try:
            return os.stat(self.path("images", hex_of(digest) + ".used")).st_mtime
        except FileNotFoundError:
            return None

    def remove_image(self, digest: str) -> None:
        for suffix in (".json", ".used"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path("images", hex_of(digest) + suffix))

    def layers(self) -> list[str]:
        directory = self.path("layers")
        return ["sha256:" + name for name in os.listdir(directory)] if os.path.isdir(directory) else []

    def remove_layer(self, digest: str) -> None:
        """Out of sight first (a rename), then deleted: never half a layer under its name."""
        import shutil

        doomed = os.path.join(self.temporary(), "layer")
        os.rename(self.layer_dir(digest), doomed)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.short_link(digest))
        shutil.rmtree(os.path.dirname(doomed))


def is_windows(record: dict) -> bool:
    return record.get("platform", "").startswith("windows")


def _windows() -> bool:
    """Whether the store runs on Windows' file locks and process handles (a seam for the tests,
    which run that path against the simulated kernel32)."""
    return sys.platform == "win32"


def _read_json(path: str):
    """A record of the store, through the cache of parsed documents: a run from an image reads
    the image's record and its layers' without importing json."""
    from nspawn.config.load import cached_parse

    with open(path, "rb") as f:
        data = f.read()

    def parse():
        import json

        return json.loads(data)

    return cached_parse(data, parse)


def _alive(pid: int) -> bool:
    if _windows():
        from nspawn.backends.hcs.native import kernel32

        return kernel32.process_alive(pid)  # os.kill(pid, 0) would terminate it there
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _atomic_write(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.{time.monotonic_ns()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)  # rename would not replace an existing file on Windows


def _atomic_symlink(target: str, path: str) -> None:
    temporary = f"{path}.{os.getpid()}.{time.monotonic_ns()}"
    os.symlink(target, temporary)
    os.rename(temporary, path)

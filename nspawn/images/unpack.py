"""One layer's tar stream unpacked into a directory in overlay's form.

Whiteouts (`.wh.NAME`) become character devices 0/0 and opaque markers (`.wh..wh..opq`) the
`trusted.overlay.opaque` attribute of their directory, as overlayfs reads them as a lower
layer. Ownership, modes, times, device nodes, hard links and extended attributes are applied
(`tarfile` reads PAX `SCHILY.xattr.*` records but applies none; `security.capability` among
them is what makes ping work without root). An entry that would leave the layer's root, by `..`
or through a symbolic link the layer made, is refused with the whole layer: a layer is data
from the network, and overlay's own attributes are not taken from it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile

from nspawn.errors import NspawnError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_XATTR = "SCHILY.xattr."
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class LayerError(NspawnError):
    """A layer that cannot be unpacked safely or faithfully."""


def _parts(name: str, layer: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer {layer}: the entry {name!r} climbs out of the layer's root with '..'; refusing the layer")
    return parts


def _parent(root: str, parts: list[str], name: str, layer: str) -> str:
    """The host directory that will hold the entry, made as needed; never through a symbolic link."""
    path = root
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise LayerError(f"layer {layer}: the entry {name!r} passes through the symbolic link "
                             f"{'/'.join(parts[:parts.index(part) + 1])}; refusing the layer")
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer {layer}: the entry {name!r} is below {part!r}, which is not a directory")
    return path


def _clear(path: str, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def unpack(stream, root: str, layer: str) -> int:
    """Unpack the tar `stream` (uncompressed, read in order) into the existing directory `root`;
    returns the bytes of file content written. `layer` names it in errors."""
    written = 0
    directories = []  # their times are set last: adding entries changes them
    with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
        for member in tar:
            parts = _parts(member.name, layer)
            if not parts:
                if member.isdir():
                    directories.append((root, member))
                continue
            parent = _parent(root, parts, member.name, layer)
            base = parts[-1]
            if base == OPAQUE:
                os.setxattr(parent, "trusted.overlay.opaque", b"y")
                continue
            if base.startswith(WHITEOUT):
                target = os.path.join(parent, base[len(WHITEOUT):])
                _clear(target, keep_dir=False)
                os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
                continue
            path = os.path.join(parent, base)
            _clear(path, keep_dir=member.isdir())
            if member.isdir():
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                directories.append((path, member))
                _attributes(path, member)
                continue
            if member.type in _FILE_TYPES:
                source = tar.extractfile(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                written += member.size
            elif member.issym():
                os.symlink(member.linkname, path)
            elif member.islnk():
                link_parts = _parts(member.linkname, layer)
                if not link_parts:
                    raise LayerError(f"layer {layer}: the hard link {member.name!r} names the layer's root")
                target = os.path.join(_parent(root, link_parts, member.linkname, layer), link_parts[-1])
                if not os.path.lexists(target):
                    raise LayerError(f"layer {layer}: the hard link {member.name!r} names {member.linkname!r}, "
                                     "which the layer does not hold before it")
                os.link(target, path, follow_symlinks=False)
                continue  # a hard link shares its target's attributes
            elif member.ischr() or member.isblk():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            elif member.isfifo():
                os.mkfifo(path, 0o600)
            else:
                raise LayerError(f"layer {layer}: the entry {member.name!r} has the tar type {member.type!r}, "
                                 "which a layer should not hold")
            _attributes(path, member)
    for path, member in reversed(directories):
        if path == root:
            _attributes(path, member)
        os.utime(path, ns=(member.mtime * 10**9,) * 2, follow_symlinks=False)
    return written


def _attributes(path: str, member: tarfile.TarInfo) -> None:
    link = member.issym()
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not link:
        os.chmod(path, member.mode & 0o7777)  # after chown, which clears set-user-ID
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR):
            name = key[len(_XATTR):]
            if name.startswith("trusted.overlay."):
                continue  # overlay's own attributes come from this module, never from a layer
            # tarfile decodes PAX values with surrogateescape: this gives back the bytes
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    if not member.isdir():
        mtime = int(member.mtime * 10**9)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

"""A pulled Windows layer made into a layer folder of the store's windowsfilter form, through
HCS (HcsImportLayer), as Docker's windowsfilter driver imports one.

A Windows layer's tar holds the layer in transport form: Files/ (the container's C:\\),
Hives/ (registry hive deltas), and in a base layer UtilityVM/; its entries carry their
attributes and security descriptors in PAX records (MSWINDOWS.fileattr, MSWINDOWS.rawsd), and
deletions as whiteouts. The tar is expanded into a staging folder (its deletions listed in
tombstones.txt), HcsImportLayer makes the layer from it over its parent layers, layerchain.json
(the parents, top-most first, what the HCS backend reads from a parent layer folder) is written
beside what HCS made, and the folder is renamed into place: windowsfilter/<hex of the blob's digest> exists only once complete, so an import cut
short leaves nothing a run would use (the store's tmp/ sweep takes the rest).

Where computestorage.dll or its HcsImportLayer is missing (before Windows Server 2019),
vmcompute.dll's ImportLayer does the same. Both need SeBackupPrivilege and SeRestorePrivilege
enabled on the process token: enable_privileges() does so once per pull, and says what is
missing otherwise.
"""

from __future__ import annotations

import json
import os
import tarfile

from nspawn.errors import NspawnError
from nspawn.images.unpack import OPAQUE, WHITEOUT, LayerError, _parent, _parts

# The folders of a Windows layer in transport form (hcsshim's ociwclayer writes these).
TOP_FOLDERS = ("Files", "Hives", "UtilityVM")
LAYERCHAIN = "layerchain.json"
TOMBSTONES = "tombstones.txt"
_FILES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class PrivilegeError(NspawnError):
    """The launcher's token lacks the backup privileges a layer import needs."""


def enable_privileges() -> None:
    from nspawn.backends.hcs.native import advapi32

    try:
        advapi32.enable(advapi32.BACKUP, advapi32.RESTORE)
    except advapi32.PrivilegeMissing as e:
        raise PrivilegeError(f"Windows layers are imported and deleted with SeBackupPrivilege and SeRestorePrivilege: "
                             f"{e}") from None


def expand(stream, source: str, layer: str) -> int:
    """The layer's tar entries written under `source` as they are named; bytes written.

    A whiteout (Files/DIR/.wh.NAME) becomes a line \\DIR\\NAME of tombstones.txt, the deletions
    file of a layer's transport folder (after a UTF-8 byte order mark and "Version 1.0", as
    hcsshim's layer writer makes it for vmcompute's import). The MSWINDOWS.* records are not
    applied here: attributes and security descriptors are Windows' own."""
    written = 0
    tombstones = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for entry in tar:
            parts = _parts(entry.name, layer)
            if not parts:
                continue
            if parts[0] not in TOP_FOLDERS:
                raise LayerError(f"layer {layer}: the entry {entry.name!r} is outside Files/, Hives/ and UtilityVM/; "
                                 "expected a Windows layer")
            if parts[-1].startswith(WHITEOUT):
                if parts[0] != "Files" or parts[-1] == OPAQUE:
                    raise LayerError(f"layer {layer}: the whiteout {entry.name!r} is not below Files/ or is an opaque "
                                     "directory; expected deletions of files of the container's C:\\ only")
                tombstones.append("\\" + "\\".join(parts[1:-1] + [parts[-1][len(WHITEOUT):]]))
                continue
            parent = _parent(source, parts, entry.name, layer)
            path = os.path.join(parent, parts[-1])
            if entry.isdir():
                if not os.path.isdir(path):
                    os.mkdir(path, 0o755)
            elif entry.type in _FILES:
                with tar.extractfile(entry) as data, open(path, "wb") as out:
                    while chunk := data.read(1 << 20):
                        out.write(chunk)
                        written += len(chunk)
            elif entry.islnk():
                target = os.path.join(source, *_parts(entry.linkname, layer))
                if not os.path.isfile(target) or os.path.islink(target):
                    raise LayerError(f"layer {layer}: the hard link {entry.name!r} names {entry.linkname!r}, "
                                     "which is no earlier file of the layer")
                os.link(target, path)
            else:
                # Windows layers carry reparse points as PAX records on files and directories,
                # never as tar symbolic links or devices.
                raise LayerError(f"layer {layer}: the entry {entry.name!r} is a {_kind(entry)}; expected files, "
                                 "directories and hard links (a Windows layer)")
    with open(os.path.join(source, TOMBSTONES), "w", encoding="utf-8", newline="\n") as f:
        f.write("\ufeffVersion 1.0\n" + "".join(t + "\n" for t in tombstones))
    return written


def _kind(entry) -> str:
    return "symbolic link" if entry.issym() else "device or FIFO"


def import_layer(store, digest: str, source: str, parents: list, work: str) -> None:
    """The layer expanded in `source` imported over `parents` (digests, top-most first) and
    put in place as store.windows_layer_dir(digest)."""
    from nspawn.backends.hcs.native import computestorage, vmcompute
    from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable

    folders = [store.windows_layer_dir(d) for d in parents]
    # A layer's id is NameToGuid of its folder name, as Docker's windowsfilter driver names them.
    layer_data = [(vmcompute.name_to_guid(os.path.basename(folder)), folder) for folder in folders]
    imported = os.path.join(work, "imported")
    try:
        try:
            computestorage.import_layer(imported, source, layer_data)
        except LibraryUnavailable:  # before Windows Server 2019: vmcompute's import, as Docker's driver did
            vmcompute.import_layer(work, os.path.basename(imported), source, layer_data)
    except HcsError as e:
        raise LayerError(f"layer {digest} could not be imported: {e}") from None
    with open(os.path.join(imported, LAYERCHAIN), "w", encoding="utf-8") as f:
        json.dump(folders, f)
    store.add_windows_layer(digest, imported)

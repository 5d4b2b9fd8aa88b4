"""computestorage.dll: a layer in transport form (files as a registry's tar carries them)
imported into a layer folder HCS can stack (Microsoft's HCS storage reference,
HcsImportLayer; hcsshim's computestorage package binds the same export).

The layer data names the parent layers, top-most first, as layerchain.json lists them:
{"SchemaVersion": {"Major": 2, "Minor": 1}, "Layers": [{"Id": "<guid>", "Path": "<folder>"}]}.
"""

from __future__ import annotations

import json
from ctypes import c_int32, c_wchar_p

from .errors import fails
from .loader import Bindings
from .vmcompute import Parents

SCHEMA = {"Major": 2, "Minor": 1}

_storage = Bindings("computestorage.dll", {
    "HcsImportLayer": (c_int32, [c_wchar_p, c_wchar_p, c_wchar_p], fails),
    "HcsDestroyLayer": (c_int32, [c_wchar_p], fails),
})
BINDINGS = (_storage,)


def layer_data(parents: Parents) -> str:
    return json.dumps({"SchemaVersion": SCHEMA, "Layers": [{"Id": str(layer_id), "Path": path}
                                                           for layer_id, path in parents]})


def import_layer(layer_path: str, source: str, parents: Parents) -> None:
    """The layer expanded in `source` imported into `layer_path` (which HCS creates), over
    `parents`; needs SeBackupPrivilege and SeRestorePrivilege enabled (advapi32.enable)."""
    _storage.HcsImportLayer(layer_path, source, layer_data(parents))


def destroy_layer(layer_path: str) -> None:
    """Deletes a layer folder HCS made, whose files' security descriptors may keep a plain
    delete out (the backup privileges enabled first)."""
    _storage.HcsDestroyLayer(layer_path)

"""computenetwork.dll (HCN): a NAT endpoint in a namespace for a v2 container, as
hcsshim's hcn package makes them.  v1 hosts use vmcompute.hns_call instead."""

from __future__ import annotations

import json
import uuid
from ctypes import POINTER, c_int32, c_void_p, c_wchar_p

from nspawn.backends.hcs.network import HCN_SCHEMA as SCHEMA

from . import kernel32
from .errors import E_FAIL, HcsError, fails
from .loader import Bindings, Closing, take_string
from .vmcompute import GUID, guid


def _hcn(error_index: int, output_index: int | None = None):
    """Takes (CoTaskMemFree) the ErrorRecord and the output string; a non-empty
    ErrorRecord is a failure even with S_OK, as hcsshim treats it."""
    def factory(export):
        def check(hr, func, args):
            record = take_string(args[error_index], kernel32.co_task_mem_free)
            output = take_string(args[output_index], kernel32.co_task_mem_free) if output_index else None
            if hr < 0 or record:
                raise HcsError(export, hr if hr < 0 else E_FAIL, record)
            return output
        return check
    return factory


_H = c_void_p
_OUT = POINTER(c_void_p)
_HR = c_int32
_ID = POINTER(GUID)
_hcn_dll = Bindings("computenetwork.dll", {
    "HcnEnumerateNetworks": (_HR, [c_wchar_p, _OUT, _OUT], _hcn(2, 1)),
    "HcnEnumerateEndpoints": (_HR, [c_wchar_p, _OUT, _OUT], _hcn(2, 1)),
    "HcnEnumerateNamespaces": (_HR, [c_wchar_p, _OUT, _OUT], _hcn(2, 1)),
    "HcnQueryEndpointProperties": (_HR, [_H, c_wchar_p, _OUT, _OUT], _hcn(3, 2)),
    "HcnQueryNamespaceProperties": (_HR, [_H, c_wchar_p, _OUT, _OUT], _hcn(3, 2)),
    "HcnOpenNetwork": (_HR, [_ID, _OUT, _OUT], _hcn(2)),
    "HcnCloseNetwork": (_HR, [_H], fails),
    "HcnCreateEndpoint": (_HR, [_H, _ID, c_wchar_p, _OUT, _OUT], _hcn(4)),
    "HcnDeleteEndpoint": (_HR, [_ID, _OUT], _hcn(1)),
    "HcnCloseEndpoint": (_HR, [_H], fails),
    "HcnCreateNamespace": (_HR, [_ID, c_wchar_p, _OUT, _OUT], _hcn(3)),
    "HcnOpenNamespace": (_HR, [_ID, _OUT, _OUT], _hcn(2)),
    "HcnModifyNamespace": (_HR, [_H, c_wchar_p, _OUT], _hcn(2)),
    "HcnDeleteNamespace": (_HR, [_ID, _OUT], _hcn(1)),
    "HcnCloseNamespace": (_HR, [_H], fails),
})
BINDINGS = (_hcn_dll,)


def _guid(id: uuid.UUID | str | None) -> GUID:
    # GUID_NULL lets HCN choose the id, as hcsshim does.
    return GUID() if id is None else guid(id)


class _HcnObject(Closing):
    _close: str

    def __init__(self, handle: int):
        self.handle = handle

    def close(self) -> None:
        if self.handle:
            getattr(_hcn_dll, self._close)(self.handle)
            self.handle = None


class Network(_HcnObject):
    _close = "HcnCloseNetwork"

    def create_endpoint(self, settings: dict, id: uuid.UUID | str | None = None) -> Endpoint:
        """settings: HostComputeEndpoint (Name, HostComputeNetwork, Policies, SchemaVersion)."""
        handle = c_void_p()
        _hcn_dll.HcnCreateEndpoint(self.handle, _guid(id), json.dumps(settings), handle, c_void_p())
        return Endpoint(handle.value)


class Endpoint(_HcnObject):
    _close = "HcnCloseEndpoint"

    def properties(self) -> dict:
        """HostComputeEndpoint as HCN has it: ID, Name, IpConfigurations..."""
        return json.loads(_hcn_dll.HcnQueryEndpointProperties(self.handle, _QUERY, c_void_p(), c_void_p()))


class Namespace(_HcnObject):
    _close = "HcnCloseNamespace"

    def _endpoint(self, request: str, endpoint_id: str) -> None:
        _hcn_dll.HcnModifyNamespace(self.handle, json.dumps(
            {"ResourceType": "Endpoint", "RequestType": request, "Settings": {"EndpointId": endpoint_id}}),
            c_void_p())

    def properties(self) -> dict:
        """HostComputeNamespace as HCN has it: ID, Type, Resources (the endpoints in it)."""
        return json.loads(_hcn_dll.HcnQueryNamespaceProperties(self.handle, _QUERY, c_void_p(), c_void_p()))

    def endpoints(self) -> list[str]:
        return [r["Data"]["Id"] for r in self.properties().get("Resources") or []
                if r.get("Type") == "Endpoint" and isinstance(r.get("Data"), dict) and r["Data"].get("Id")]

    def add_endpoint(self, endpoint_id: str) -> None:
        self._endpoint("Add", endpoint_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        self._endpoint("Remove", endpoint_id)


def _named(name: str | None) -> str:
    # HostComputeQuery: the filter is itself a JSON string
    query = {"SchemaVersion": SCHEMA}
    if name is not None:
        query["Filter"] = json.dumps({"Name": name})
    return json.dumps(query)


_QUERY = _named(None)


def find_networks(name: str) -> list[str]:
    """Ids of the networks called `name`."""
    return json.loads(_hcn_dll.HcnEnumerateNetworks(_named(name), c_void_p(), c_void_p()) or "[]")


def find_endpoints(name: str) -> list[str]:
    """Ids of the endpoints called `name`."""
    return json.loads(_hcn_dll.HcnEnumerateEndpoints(_named(name), c_void_p(), c_void_p()) or "[]")


def namespaces() -> list[str]:
    """Ids of every namespace (they have no name to filter by)."""
    return json.loads(_hcn_dll.HcnEnumerateNamespaces(_QUERY, c_void_p(), c_void_p()) or "[]")


def open_network(id: uuid.UUID | str) -> Network:
    handle = c_void_p()
    _hcn_dll.HcnOpenNetwork(_guid(id), handle, c_void_p())
    return Network(handle.value)


def delete_endpoint(id: uuid.UUID | str) -> None:
    _hcn_dll.HcnDeleteEndpoint(_guid(id), c_void_p())


def create_namespace(id: uuid.UUID | str | None = None) -> Namespace:
    """A namespace with no Type set, as hcsshim makes them."""
    handle = c_void_p()
    _hcn_dll.HcnCreateNamespace(_guid(id), json.dumps({"SchemaVersion": SCHEMA}), handle, c_void_p())
    return Namespace(handle.value)


def open_namespace(id: uuid.UUID | str) -> Namespace:
    handle = c_void_p()
    _hcn_dll.HcnOpenNamespace(_guid(id), handle, c_void_p())
    return Namespace(handle.value)


def delete_namespace(id: uuid.UUID | str) -> None:
    _hcn_dll.HcnDeleteNamespace(_guid(id), c_void_p())

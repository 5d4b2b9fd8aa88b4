"""The one place that differs between Windows and the Linux tests.

On Windows each DLL loads with WinDLL.  When NSPAWN_HCS_LIBRARY names a shared
object (the simulator in tests/hcs_sim), every DLL name resolves to it; the
simulator prefixes each export with the DLL's stem (``vmcompute_HcsCreateProcess``)
because vmcompute.dll and computecore.dll export different functions under
the same names.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Callable, Iterable

from .errors import LibraryUnavailable, MissingExport

SIMULATOR_ENV = "NSPAWN_HCS_LIBRARY"


def simulated() -> bool:
    """Whether the HCS libraries are the simulator's, off Windows. Its host side (layer,
    process and mount host paths) is then this host, with its own paths, while container paths
    stay Windows paths; the config checks ask this for Windows configs only."""
    return sys.platform != "win32" and bool(os.environ.get(SIMULATOR_ENV))

if sys.platform == "win32":
    FUNCTYPE = ctypes.WINFUNCTYPE  # CALLBACK is __stdcall (the same as cdecl on x64)
else:
    FUNCTYPE = ctypes.CFUNCTYPE


class Library:
    """Functions of one DLL, looked up by their Windows export names."""

    def __init__(self, name: str, dll: ctypes.CDLL, prefix: str = ""):
        self.name = name
        self._dll = dll
        self._prefix = prefix
        self.simulated = bool(prefix)

    def function(self, export: str):
        # Indexing (not attribute access) returns a fresh function object, so
        # prototypes set here never leak to another module's binding of a
        # same-named export.
        try:
            return self._dll[self._prefix + export]
        except AttributeError as e:
            raise MissingExport(self.name, export) from e


class Closing:
    """An owner of native handles usable in a with-block: close() on the way out."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_cache: dict[tuple[str, str | None], Library] = {}
_lock = threading.Lock()


def load(name: str) -> Library:
    """The library for a DLL name such as ``computecore.dll``; cached."""
    simulator = os.environ.get(SIMULATOR_ENV) or None
    key = (name.lower(), simulator)
    with _lock:
        if key not in _cache:
            _cache[key] = _open(name, simulator)
        return _cache[key]


def _open(name: str, simulator: str | None) -> Library:
    if simulator:
        try:
            dll = ctypes.CDLL(simulator)
        except OSError as e:
            raise LibraryUnavailable(name, f"the simulator {simulator} does not load: {e}") from e
        return Library(name, dll, name.lower().removesuffix(".dll") + "_")
    if sys.platform != "win32":
        raise LibraryUnavailable(name, f"HCS needs Windows (or {SIMULATOR_ENV} set to a simulator)")
    try:
        return Library(name, ctypes.WinDLL(name, use_last_error=True))
    except OSError as e:
        raise LibraryUnavailable(name, str(e)) from e


def last_error() -> int:
    """GetLastError of the calling thread for the most recent failing Win32 call."""
    kernel32 = load("kernel32.dll")
    if kernel32.simulated:
        return kernel32.function("GetLastError")()
    return ctypes.get_last_error()


def os_handle(fd: int) -> int | None:
    """The Win32 handle behind one of the launcher's file descriptors, None when it is closed.
    The simulator's handles are the descriptors themselves."""
    if simulated():
        try:
            os.fstat(fd)
        except OSError:
            return None
        return fd
    import msvcrt

    try:
        return msvcrt.get_osfhandle(fd)
    except OSError:
        return None


class Bindings:
    """Prototypes of one DLL's functions, applied on first use.

    ``table`` maps export names to ``(restype, argtypes, errcheck_factory)``;
    the factory receives the export name.  Binding lazily keeps the modules
    importable where the DLL does not exist.
    """

    def __init__(self, dll: str, table: dict[str, tuple]):
        self.dll = dll
        self.table = table
        self._bound: dict[tuple[str, int], object] = {}

    def __getattr__(self, export: str):
        try:
            restype, argtypes, check = self.table[export]
        except KeyError:
            raise AttributeError(export) from None
        lib = load(self.dll)
        key = (export, id(lib))
        fn = self._bound.get(key)
        if fn is None:
            fn = lib.function(export)
            fn.restype = restype
            fn.argtypes = argtypes
            fn.errcheck = check(export)
            self._bound[key] = fn
        return fn

    def names(self) -> Iterable[str]:
        return self.table.keys()


def take_string(ptr: ctypes.c_void_p, free: Callable[[ctypes.c_void_p], None]) -> str | None:
    """Copies a returned PWSTR and frees it with the allocator its DLL uses."""
    if not ptr.value:
        return None
    try:
        return ctypes.wstring_at(ptr.value)
    finally:
        free(ptr)
        ptr.value = None

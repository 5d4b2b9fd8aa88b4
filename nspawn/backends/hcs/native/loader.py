"""The one place that differs between Windows and the Linux tests.

On Windows each DLL loads with WinDLL.  When NSPAWN_HCS_LIBRARY names a shared
object (the simulator in tests/hcs_sim), every DLL name resolves to it; the
simulator prefixes each export with the DLL's stem (``vmcompute_HcsCreateProcess``)
because vmcompute.dll and computecore.dll export different functions under
the same names. ctypes-windows-sdk, where the Win32 structures and prototypes come
from, is imported here too (sdk()), its DLLs resolved the same way.
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


def sdk(module: str):
    """A module of ctypes-windows-sdk (``um.handleapi``, ``shared.winerror``): the Win32
    structures, constants and prototypes nspawn takes from it instead of writing them.

    cwinsdk binds its DLLs' functions when its modules import, and off Windows does not import
    at all (its package needs ctypes.WinDLL). So it is imported through _SdkImporter, on every
    platform: every DLL it names resolves through load() (the simulator under test), export by
    export when a function is called, so an export the host lacks (an older Windows build, or
    the simulator) fails that call and not the import; off Windows with Windows' integer widths
    too. Either way nspawn calls no cwinsdk function object: Bindings make their own from the
    prototype, with nspawn's errcheck and (on Windows) use_last_error."""
    import importlib

    _SdkImporter.install()
    try:
        return importlib.import_module(f"cwinsdk.{module}")
    except ModuleNotFoundError as e:
        # Off Windows it is a test extra only: `nspawn ps` and `cleanup` ask HCS on every host,
        # and where it is missing there is no HCS to ask.
        if (e.name or "").partition(".")[0] != "cwinsdk":
            raise
        raise LibraryUnavailable("ctypes-windows-sdk", f"it does not import ({e}; pip install ctypes-windows-sdk)") from None


def prototype(sdk_function, check) -> tuple:
    """A Bindings table row from a cwinsdk function: its restype and argtypes, nspawn's check."""
    return (sdk_function.restype, sdk_function.argtypes, check)


class _SdkFunction:
    """A cwinsdk function: holds the prototype cwinsdk sets on it, and looks its export up
    through load() when it is called."""

    def __init__(self, dll: str, export: str):
        self.dll = dll
        self.__name__ = export
        self.restype = ctypes.c_int  # ctypes' own default, for a function cwinsdk leaves alone
        self.argtypes = None
        self.errcheck = None

    def __call__(self, *args):
        fn = load(self.dll).function(self.__name__)
        fn.restype, fn.argtypes = self.restype, self.argtypes
        if self.errcheck is not None:
            fn.errcheck = self.errcheck
        return fn(*args)


class _SdkDLL:
    """What cwinsdk's ``windll.<name>`` gives."""

    def __init__(self, name: str):
        self._name = name if name.lower().endswith(".dll") else name + ".dll"

    def __getattr__(self, export: str):
        if export.startswith("__"):
            raise AttributeError(export)
        return _SdkFunction(self._name, export)


class _SdkImporter:
    """Imports cwinsdk's modules, each seeing instead of ctypes and ctypes.wintypes copies whose
    WinDLL is _SdkDLL. Off Windows the copies also have Windows' 64-bit data model (long and
    unsigned long are 32 bits, as the simulator's DWORD and ULONG are), WINFUNCTYPE and WinError,
    so its structures have their Windows layouts; wchar_t keeps this platform's width, which the
    simulator's WCHAR is too. Only cwinsdk's modules see these copies (through their own
    __import__); ctypes itself is left alone."""

    _installed = False

    @classmethod
    def install(cls) -> None:
        with _lock:
            if not cls._installed:
                sys.meta_path.insert(0, cls())
                cls._installed = True

    def __init__(self):
        import builtins
        import types

        shim = types.ModuleType("ctypes")
        shim.__dict__.update(vars(ctypes))
        shim.WinDLL = _SdkDLL
        if sys.platform != "win32":
            shim.c_long, shim.c_ulong = ctypes.c_int32, ctypes.c_uint32
            shim.WINFUNCTYPE = ctypes.CFUNCTYPE
            shim.WinError = lambda code=None, descr=None: OSError(
                None, descr or "Windows error", None, last_error() if code is None else code)
        wintypes = types.ModuleType("ctypes.wintypes")
        wintypes.__dict__["__builtins__"] = self.builtins = dict(vars(builtins))
        self.ctypes, self.wintypes = shim, wintypes
        self.builtins["__import__"] = self._import
        import ctypes.wintypes as real

        with open(real.__file__, encoding="utf-8") as f:
            exec(compile(f.read(), real.__file__, "exec"), wintypes.__dict__)
        shim.wintypes = wintypes

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name == "ctypes":
            return self.ctypes
        if level == 0 and name == "ctypes.wintypes":
            return self.wintypes if fromlist else self.ctypes
        return __import__(name, globals, locals, fromlist, level)

    def find_spec(self, name, path=None, target=None):
        if name != "cwinsdk" and not name.startswith("cwinsdk."):
            return None
        from importlib.machinery import PathFinder, SourceFileLoader

        spec = PathFinder.find_spec(name, path)
        if spec is None or not isinstance(spec.loader, SourceFileLoader):
            return spec
        importer = self

        class Loader(SourceFileLoader):
            def exec_module(self, module):
                module.__builtins__ = importer.builtins
                super().exec_module(module)

        spec.loader = Loader(spec.loader.name, spec.loader.path)
        return spec


def take_string(ptr: ctypes.c_void_p, free: Callable[[ctypes.c_void_p], None]) -> str | None:
    """Copies a returned PWSTR and frees it with the allocator its DLL uses."""
    if not ptr.value:
        return None
    try:
        return ctypes.wstring_at(ptr.value)
    finally:
        free(ptr)
        ptr.value = None

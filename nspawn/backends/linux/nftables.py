"""libnftables (libnftables.so.1, Debian's libnftables1) through ctypes: one context, commands in
nft's own syntax or JSON fed through nft_run_cmd_from_buffer, the answers and errors read from
its buffers. Each call raising NftError (the call, its code, libnftables' error text).

Only `network: nat` imports this module, and only when it changes rules: the library maps
in about a millisecond, which a run without published ports need not pay.
"""

from __future__ import annotations

import ctypes
import json
from ctypes import c_bool, c_char_p, c_int, c_uint, c_uint32, c_void_p

SONAME = "libnftables.so.1"
CTX_DEFAULT = 0
OUTPUT_HANDLE = 1 << 3  # nftables/libnftables.h: enum nft_output_flags
OUTPUT_JSON = 1 << 4


class NftError(OSError):
    """A libnftables call failed: `call` names it, `code` is what it returned, the text is
    libnftables' own error output (which names the command and the token it stopped at)."""

    def __init__(self, call: str, code: int | None, text: str = ""):
        super().__init__(text.strip() or "failed")
        self.call, self.code = call, code

    def __str__(self) -> str:
        return f"{self.call}: {self.args[0]} (code {self.code})"


class NftMissing(NftError):
    """libnftables.so.1 cannot be loaded on this host."""


def _check_status(result, func, args):
    if result != 0:
        raise NftError(func.__name__, result)
    return result


def _check_pointer(result, func, args):
    if not result:
        raise NftError(func.__name__, None, "returned NULL")
    return result


try:
    _lib = ctypes.CDLL(SONAME, use_errno=True)
except OSError as e:  # kept for the first use, so importing never fails on a host without it
    _lib, _missing = None, str(e)
else:
    _missing = ""
    for _name, _args, _res, _check in (
        ("nft_ctx_new", [c_uint32], c_void_p, _check_pointer),
        ("nft_ctx_free", [c_void_p], None, None),
        ("nft_ctx_buffer_output", [c_void_p], c_int, _check_status),
        ("nft_ctx_buffer_error", [c_void_p], c_int, _check_status),
        ("nft_ctx_get_output_buffer", [c_void_p], c_char_p, None),  # NULL or "" both mean no output
        ("nft_ctx_get_error_buffer", [c_void_p], c_char_p, None),
        ("nft_ctx_output_set_flags", [c_void_p, c_uint], None, None),
        ("nft_ctx_set_dry_run", [c_void_p, c_bool], None, None),
        # Its failures carry text in the error buffer, which only Nft.run can read: no errcheck.
        ("nft_run_cmd_from_buffer", [c_void_p, c_char_p], c_int, None),
    ):
        _fn = getattr(_lib, _name)
        _fn.argtypes, _fn.restype = _args, _res
        if _check:
            _fn.errcheck = _check


def available() -> str | None:
    """None when libnftables loads here, else why not."""
    return None if _lib is not None else _missing


class Nft:
    """One libnftables context; `run` takes nft syntax, `run_json` a JSON command document."""

    def __init__(self, json_output: bool = False, dry_run: bool = False):
        if _lib is None:
            raise NftMissing("dlopen", None, f"{SONAME}: {_missing} (install libnftables1)")
        self._ctx = _lib.nft_ctx_new(CTX_DEFAULT)
        _lib.nft_ctx_buffer_output(self._ctx)
        _lib.nft_ctx_buffer_error(self._ctx)
        if json_output:
            _lib.nft_ctx_output_set_flags(self._ctx, OUTPUT_JSON | OUTPUT_HANDLE)
        if dry_run:
            _lib.nft_ctx_set_dry_run(self._ctx, True)

    def close(self) -> None:
        if self._ctx:
            _lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, commands: str) -> str:
        """Run commands (one transaction: all or none); their output, if any."""
        code = _lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        output = (_lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        if code != 0:
            error = (_lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
            raise NftError("nft_run_cmd_from_buffer", code, error)
        return output

    def run_json(self, document: dict) -> dict | None:
        output = self.run(json.dumps(document, separators=(",", ":")))
        return json.loads(output) if output.strip() else None

"""Acquiring what a journal entry, written just before, stands for."""

from __future__ import annotations

from nspawn.backends.hcs.native.errors import HcsError


def acquire(journal, entry, call, *args) -> None:
    """Makes the call; when HCS answers that it failed, the entry is marked acquired=False so
    its releaser skips it (undoing what never happened fails in HCS too). An entry without the
    mark, as a killed launcher leaves it, is released."""
    try:
        call(*args)
    except HcsError:
        journal.update(entry, acquired=False)
        raise
    if entry.data.get("acquired") is False:
        journal.update(entry, acquired=True)

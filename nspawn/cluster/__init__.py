"""Batches across machines on Dask distributed (docs/cluster.md): `nspawn worker` runs jobs a
`nspawn batch --cluster` client sends through a Dask scheduler. The `distributed` package is an
optional extra; nothing outside this package imports it, and this package only where a cluster
option was given."""

from __future__ import annotations

INSTALL = "pip install 'nspawn[cluster]'"


def missing() -> str | None:
    """Why the cluster cannot be used here (distributed is not installed), or None."""
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        return f"the cluster options need the distributed package ({e}); install it with: {INSTALL}"
    return None

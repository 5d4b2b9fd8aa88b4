"""The `nspawn batch` click command."""

from __future__ import annotations

import click


@click.command()
@click.argument("paths", nargs=-1, required=True)
def batch(paths):
    """Run many configs as jobs."""
    raise click.UsageError("not yet implemented")

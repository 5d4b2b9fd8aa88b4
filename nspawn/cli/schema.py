"""`nspawn schema`."""

from __future__ import annotations

import click


@click.command()
def schema():
    """Print the config's JSON Schema (draft 2020-12)."""
    from nspawn.config.load import schema_bytes

    click.echo(schema_bytes().decode().rstrip())

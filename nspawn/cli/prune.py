"""`nspawn prune`."""

from __future__ import annotations

import click

from nspawn.cli import verbosity_options


@click.command()
@verbosity_options
def prune():
    """Delete the layers no image in the store names (after `nspawn rmi`), never one a running
    container uses, and what interrupted pulls left."""
    from nspawn.cli.images import size_text
    from nspawn.images.manage import prune as prune_store

    said, freed = prune_store()
    for line in said:
        click.echo(line)
    click.echo(f"freed {size_text(freed)}")

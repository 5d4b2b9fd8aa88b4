"""`nspawn prune`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


@click.command()
@verbosity_options
@click.pass_context
def prune(ctx):
    """Delete the layers no image in the store names (after `nspawn rmi`), never one a running
    container uses, and what interrupted pulls left."""
    from nspawn.cli.images import size_text
    from nspawn.errors import NspawnError
    from nspawn.images.manage import prune as prune_store

    try:
        said, freed = prune_store()
    except NspawnError as e:  # Windows layers: the backup privileges, or HCS refusing a delete
        reporter(ctx).error(f"cannot prune: {e}")
        ctx.exit(getattr(e, "exit_code", exitcodes.LAUNCHER))
    for line in said:
        click.echo(line)
    click.echo(f"freed {size_text(freed)}")

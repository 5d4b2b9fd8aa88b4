"""`nspawn rmi REF...`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


@click.command()
@click.argument("references", nargs=-1, required=True)
@verbosity_options
@click.pass_context
def rmi(ctx, references):
    """Remove images from the store by reference; their layers go at the next `nspawn prune`."""
    from nspawn.images.manage import remove
    from nspawn.images.reference import ReferenceError

    shown = reporter(ctx)
    try:
        said, missing = remove(list(references))
    except ReferenceError as e:
        shown.error(str(e))
        ctx.exit(exitcodes.USAGE)
    for line in said:
        click.echo(line)
    for text in missing:
        shown.error(f"{text}: no such image in the store")
    ctx.exit(exitcodes.USAGE if missing else exitcodes.OK)

"""`nspawn cleanup`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


@click.command()
@verbosity_options
@click.pass_context
def cleanup(ctx):
    """Finish the rollback of launchers that were killed: processes, mounts, cgroups, layers;
    terminate compute systems nspawn owns that no live launcher holds; remove what such
    containers left with HCS that no journal names any more."""
    from nspawn.maintenance import cleanup as steps

    shown = reporter(ctx)
    failed = False
    for step in steps():
        if step.ok:
            click.echo(step.line)
        else:
            failed = True
            shown.error(step.line)
    ctx.exit(exitcodes.LAUNCHER if failed else exitcodes.OK)

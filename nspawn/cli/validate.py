"""`nspawn validate CONFIG... [--host]`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


@click.command()
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--host", is_flag=True, help="Also check the config against this host.")
@verbosity_options
@click.pass_context
def validate(ctx, configs, host):
    """Check config files: every problem, one line each; exit 2 if any."""
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError

    shown = reporter(ctx)
    failed = False
    for path in configs:
        try:
            load_config(path, host=host)
        except ConfigError as e:
            failed = True
            shown.problems(e.problems)
        else:
            if shown.verbosity >= 0:
                click.echo(f"{path}: ok")
    ctx.exit(exitcodes.USAGE if failed else exitcodes.OK)

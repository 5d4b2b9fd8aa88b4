"""`nspawn doctor [--backend B] [-c CONFIG]`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.backends import AUTO, CHOICES
from nspawn.cli import reporter, verbosity_options


@click.command()
@click.option("--backend", type=click.Choice(CHOICES), default=AUTO)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Also judge this config against the host (its parent layer, its limits).")
@verbosity_options
@click.pass_context
def doctor(ctx, backend, config_path):
    """Report what this host can do: isolation, and which limits will be enforced."""
    from nspawn.errors import ConfigError
    from nspawn.maintenance import doctor as diagnose

    try:
        checks = diagnose(backend, config_path)
    except ConfigError as e:
        reporter(ctx).problems(e.problems)
        ctx.exit(e.exit_code)
    for check in checks:
        click.echo(f"{'ok ' if check.ok else 'NO '} {check.name}: {check.detail}")
    ctx.exit(exitcodes.OK if all(check.ok for check in checks) else 1)

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
@click.option("--json", "as_json", is_flag=True,
              help="On stdout, one JSON object per check: name, ok, detail (a config that does not load: its problems).")
@verbosity_options
@click.pass_context
def doctor(ctx, backend, config_path, as_json):
    """Report what this host can do: isolation, and which limits will be enforced."""
    from nspawn.errors import ConfigError
    from nspawn.maintenance import doctor as diagnose

    try:
        checks = diagnose(backend, config_path)
    except ConfigError as e:
        reporter(ctx).problems(e.problems)
        if as_json:
            import json

            from nspawn.runcmd import refusal

            click.echo(json.dumps(refusal(e), ensure_ascii=False))
        ctx.exit(e.exit_code)
    for check in checks:
        if as_json:
            import json

            click.echo(json.dumps(check._asdict(), ensure_ascii=False))
        else:
            click.echo(f"{'ok ' if check.ok else 'NO '} {check.name}: {check.detail}")
    ctx.exit(exitcodes.OK if all(check.ok for check in checks) else 1)

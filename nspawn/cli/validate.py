"""`nspawn validate CONFIG... [--host]`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


@click.command()
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--host", is_flag=True, help="Also check the config against this host.")
@click.option("--json", "as_json", is_flag=True,
              help="On stdout, one JSON object per file: path, ok, problems (each: source, path, line, column, "
                   "message, exit_code, text).")
@verbosity_options
@click.pass_context
def validate(ctx, configs, host, as_json):
    """Check config files: every problem, one line each; exit 2 if any."""
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError

    shown = reporter(ctx)
    failed = False
    for path in configs:
        problems = []
        try:
            load_config(path, host=host)
        except ConfigError as e:
            failed, problems = True, e.problems
            shown.problems(problems)
        if as_json:
            import json

            from nspawn.runcmd import problem_json

            click.echo(json.dumps({"path": path, "ok": not problems, "problems": [problem_json(p) for p in problems]},
                                  ensure_ascii=False))
        elif not problems and shown.verbosity >= 0:
            click.echo(f"{path}: ok")
    ctx.exit(exitcodes.USAGE if failed else exitcodes.OK)

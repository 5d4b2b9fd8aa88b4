"""`nspawn run` through click: one option per field of the field table that has one."""

from __future__ import annotations

import click

from nspawn.cli import verbosity
from nspawn.cli.params import field_option
from nspawn.config.fields import FIELDS


def _field_options(command):
    for field in reversed(FIELDS):  # click lists options in the order their decorators are written
        if field.option is not None:
            command = field_option(field)(command)
    return command


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (JSON).")
@_field_options
@click.option("--dry-run", is_flag=True, help="Print the backend's plan as JSON; touch nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout when done.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, config_path, dry_run, as_json, command, **options):
    """Run a container: `nspawn run -c config.json` or `nspawn run [OPTIONS] -- EXECUTABLE [ARG]...`.

    Options override the config file; without a file they describe the run alone.
    """
    # Repeated options arrive as tuples; a config's arrays are lists.
    overrides = {key: list(value) if isinstance(value, tuple) else value
                 for key, value in options.items() if value not in (None, (), {})}
    if command:
        overrides["process_executable"], overrides["process_arguments"] = command[0], list(command[1:])
    if config_path is None and "process_executable" not in overrides:
        raise click.UsageError("give a config file with -c, or a command after --")
    from nspawn.runcmd import exit_after_run, run_and_report  # not at the top: `run --help` needs neither

    exit_after_run(*run_and_report(config_path, overrides, verbosity=verbosity(ctx), dry_run=dry_run,
                                   as_json=as_json))

"""`nspawn run` through click: one option per field of the field table that has one."""

from __future__ import annotations

import click

from nspawn.cli import verbosity, verbosity_options
from nspawn.cli.params import Bind, env_file, field_option, open_fd
from nspawn.config.fields import FIELDS


def _field_options(command):
    for field in reversed(FIELDS):  # click lists options in the order their decorators are written
        if field.option is not None:
            command = field_option(field)(command)
    return command


class _Run(click.Command):
    """`run`, whose --json prints a result line for a command line click refuses too (exit 2)."""

    def make_context(self, info_name, args, parent=None, **extra):
        given = list(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            options = given[:given.index("--") if "--" in given else len(given)]
            json_fd = _json_fd(options)
            if "--json" in options or json_fd is not None:
                from nspawn.errors import ConfigError, Problem
                from nspawn.runcmd import refusal, result_line

                error = ConfigError([Problem("command line", "", e.format_message(), exit_code=e.exit_code)])
                result_line(refusal(error), "--json" in options, json_fd)
            raise


def _json_fd(options: list[str]) -> int | None:
    """The descriptor --json-fd names on a command line click refused, if it names an open one."""
    for at, arg in enumerate(options):
        value = arg.partition("=")[2] if arg.startswith("--json-fd=") else \
            options[at + 1] if arg == "--json-fd" and at + 1 < len(options) else None
        if value is not None and value.isdigit():
            try:
                return open_fd(None, None, int(value))
            except click.BadParameter:
                return None
    return None


@click.command(cls=_Run)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (JSON).")
@_field_options
@click.option("--no-tty", "tty", flag_value="never", help="Pipes for the payload's stdio even on a terminal.")
@click.option("--bind-ro", "bind_ro", type=Bind(read_only=True), multiple=True,
              help="Extra read-only mount SRC[:DST] (systemd-nspawn's spelling of --bind SRC[:DST]:ro); repeatable.")
@click.option("--env-file", "env_files", type=click.Path(dir_okay=False), multiple=True, callback=env_file,
              help="Environment from a file: NAME=VALUE lines, # comments; a bare NAME passes this host's value. "
                   "-E wins over it; repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the backend's plan as JSON; touch nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout when done.")
@click.option("--json-fd", "json_fd", type=click.IntRange(min=0), callback=open_fd, metavar="FD",
              help="Write the result as one JSON line to this open descriptor when done (as bubblewrap's "
                   "--json-status-fd): never mixed with the container's output.")
@verbosity_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, config_path, dry_run, as_json, json_fd, command, bind_ro, env_files, **options):
    """Run a container: `nspawn run -c config.json` or `nspawn run [OPTIONS] -- EXECUTABLE [ARG]...`.

    Options override the config file; without a file they describe the run alone.
    """
    if env_files:
        options["environment"] = {**env_files, **(options.get("environment") or {})}
    if bind_ro:
        options["mounts"] = (*(options.get("mounts") or ()), *bind_ro)
    # Repeated options arrive as tuples; a config's arrays are lists.
    overrides = {key: list(value) if isinstance(value, tuple) else value
                 for key, value in options.items() if value not in (None, (), {})}
    if command:
        overrides["process_executable"], overrides["process_arguments"] = command[0], list(command[1:])
    if config_path is None and "process_executable" not in overrides and "image" not in overrides:
        raise click.UsageError("give a config file with -c, an --image, or a command after --")
    from nspawn.runcmd import exit_after_run, run_and_report  # not at the top: `run --help` needs neither

    exit_after_run(*run_and_report(config_path, overrides, verbosity=verbosity(ctx), dry_run=dry_run,
                                   as_json=as_json, json_fd=json_fd))

"""The `nspawn` command line. Heavy modules (jsonschema, rich, backends) load only when a
command needs them: this is a launcher, and its start-up is part of every run."""

from __future__ import annotations

import json
import os
import re

import click

from nspawn import __version__, exitcodes

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


class Size(click.ParamType):
    """A size such as 512, 512M or 1.5G, converted to `unit` bytes (plain numbers are already in it)."""

    def __init__(self, unit: int, what: str):
        self.unit, self.name = unit, what

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = _SIZE.match(value)
        if not m:
            self.fail(f"{value!r}; expected a number with an optional K, M, G or T suffix", param, ctx)
        number, suffix = float(m.group(1)), m.group(2).lower()
        return int(number * _UNITS[suffix] / self.unit) if suffix else int(number)


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        m = _DURATION.match(value)
        if not m:
            self.fail(f"{value!r}; expected seconds, or a number with ms, s, m or h", param, ctx)
        return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


class CpuMask(click.ParamType):
    """An affinity mask: 0x3, or a CPU list such as 0-3,6."""

    name = "mask"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = value.strip()
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
            mask = 0
            for part in text.split(","):
                low, _, high = part.partition("-")
                for cpu in range(int(low), int(high or low) + 1):
                    mask |= 1 << cpu
            return mask
        self.fail(f"{value!r}; expected a hex mask such as 0x3 or a CPU list such as 0-3,6", param, ctx)


class Bind(click.ParamType):
    """SRC:DST[:ro] (SRC may be a Windows path with a drive letter)."""

    name = "src:dst[:ro]"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        m = re.fullmatch(r"((?:[A-Za-z]:)?[^:]+):((?:[A-Za-z]:)?[^:]+)(?::(ro|rw))?", value)
        if not m:
            self.fail(f"{value!r}; expected HOST_PATH:CONTAINER_PATH or HOST_PATH:CONTAINER_PATH:ro", param, ctx)
        return {"host_path": _absolute(m.group(1)), "container_path": m.group(2), "read_only": m.group(3) == "ro"}


def _absolute(path: str) -> str:
    """Command-line host paths are relative to the working directory (Windows ones stay as given)."""
    return path if re.match(r"^(?:[A-Za-z]:|\\\\)", path) or os.path.isabs(path) else os.path.abspath(path)


def _setenv(ctx, param, values):
    env = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}; expected NAME=VALUE", ctx, param)
        env[name] = value
    return env


class _Group(click.Group):
    # Commands whose module is imported only when that command runs (or --help lists it).
    LAZY = {"batch": "nspawn.batch.command"}

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx, name):
        if name in self.LAZY:
            import importlib

            return getattr(importlib.import_module(self.LAZY[name]), name)
        return super().get_command(ctx, name)

    def format_epilog(self, ctx, formatter):
        formatter.write("\n" + exitcodes.HELP + "\n")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nspawn")
@click.option("-q", "--quiet", count=True, help="Less output: warnings off.")
@click.option("-v", "--verbose", count=True, help="More output: phases, limits, plans (-vv: debug).")
@click.pass_context
def cli(ctx, quiet, verbose):
    """Run one executable in an isolated container described by a JSON config.

    On Windows the container is made by the Host Compute Service; on Linux by namespaces,
    overlayfs and cgroups. Configs written for hostcompute_nspawn work unchanged.
    """
    ctx.obj = verbose - quiet


def _reporter(ctx):
    from nspawn.ui import Reporter

    return Reporter(ctx.find_root().obj or 0)


def _fail_config(ctx, error) -> None:
    _reporter(ctx).problems(error.problems)
    ctx.exit(error.exit_code)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (JSON).")
@click.option("-D", "--directory", "process_directory", help="Host directory to map into the container (process_directory).")
@click.option("--mapped-directory", help="Where the directory appears in the container (default: the same path).")
@click.option("--read-only", "mapped_directory_read_only", is_flag=True, default=None, help="Map the directory read-only.")
@click.option("--parent-layer", "parent_layer_directory", help="Parent layer (HCS) or root filesystem directory (Linux).")
@click.option("--bind", "mounts", type=Bind(), multiple=True, help="Extra mount SRC:DST[:ro]; repeatable.")
@click.option("--memory", "max_ram_mb", type=Size(1 << 20, "size"), help="Memory limit: MiB, or with a suffix (512M, 2G).")
@click.option("--cpus", "cpus_count", type=click.IntRange(0, 65535), help="Number of CPUs.")
@click.option("--cpu-percent", "max_cpu_percent", type=click.FloatRange(0, 100), help="CPU maximum, percent of the whole host.")
@click.option("--affinity", "cpu_affinity_hex", type=CpuMask(), help="CPU affinity: 0x3 or 0-1,4.")
@click.option("--iops", "max_storage_iops", type=click.IntRange(0), help="Storage I/O operations per second.")
@click.option("--io-bandwidth", "max_storage_bandwidth_bytes_per_sec", type=Size(1, "size"), help="Storage bytes per second (10M, 1G).")
@click.option("--max-processes", type=click.IntRange(0), help="Most processes the container may have.")
@click.option("-E", "--setenv", "environment", multiple=True, callback=_setenv, help="NAME=VALUE; repeatable.")
@click.option("--chdir", "working_directory", help="Working directory inside the container.")
@click.option("--hostname", help="Container host name.")
@click.option("--stdout-file", "stdout_filename", help="Also write the output to this file in the mapped directory.")
@click.option("--timeout", "timeout_seconds", type=Duration(), help="Wall-clock limit (30, 90s, 5m); then exit 124.")
@click.option("--grace", "stop_grace_seconds", type=Duration(), help="Time between the polite stop and the kill.")
@click.option("--network", type=click.Choice(["none", "host", "nat"]), help="Network mode.")
@click.option("--isolation", type=click.Choice(["process", "hyperv"]), help="HCS isolation.")
@click.option("--backend", type=click.Choice(["auto", "hcs", "linux"]), help="Backend (default: by OS).")
@click.option("--hcs-api", type=click.Choice(["auto", "v1", "v2"]), help="HCS API generation.")
@click.option("--dry-run", is_flag=True, help="Print the backend's plan as JSON; touch nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout when done.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, config_path, dry_run, as_json, command, **options):
    """Run a container: `nspawn run -c config.json` or `nspawn run [OPTIONS] -- EXECUTABLE [ARG]...`.

    Options override the config file; without a file they describe the run alone.
    """
    overrides = {k: v for k, v in options.items() if v not in (None, (), {})}
    for key in ("process_directory", "parent_layer_directory"):
        if key in overrides:
            overrides[key] = _absolute(overrides[key])
    if "mounts" in overrides:
        overrides["mounts"] = list(overrides["mounts"])
    if command:
        overrides["process_executable"], overrides["process_arguments"] = command[0], list(command[1:])
    if config_path is None and "process_executable" not in overrides:
        raise click.UsageError("give a config file with -c, or a command after --")
    from nspawn.runcmd import exit_after_run, run_and_report

    exit_after_run(*run_and_report(config_path, overrides, verbosity=ctx.find_root().obj or 0, dry_run=dry_run,
                                   as_json=as_json))


@cli.command()
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--host", is_flag=True, help="Also check the config against this host.")
@click.pass_context
def validate(ctx, configs, host):
    """Check config files: every problem, one line each; exit 2 if any."""
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError

    reporter = _reporter(ctx)
    failed = False
    for path in configs:
        try:
            load_config(path, host=host)
        except ConfigError as e:
            failed = True
            reporter.problems(e.problems)
        else:
            if reporter.verbosity >= 0:
                click.echo(f"{path}: ok")
    ctx.exit(exitcodes.USAGE if failed else exitcodes.OK)


@cli.command()
def schema():
    """Print the config's JSON Schema (draft 2020-12)."""
    from nspawn.config.load import schema_bytes

    click.echo(schema_bytes().decode().rstrip())


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the shell completion script: eval "$(nspawn completion bash)"."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(cli, {}, "nspawn", "_NSPAWN_COMPLETE")
    click.echo(completer.source())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per container.")
def ps(as_json):
    """List the containers nspawn has running, and what killed launchers left."""
    from nspawn.maintenance import containers

    rows = containers()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row._asdict()))
        return
    for row in rows:
        click.echo(f"{row.id}  {row.state:<11}  {row.backend:<5}  pid {row.launcher_pid}  {row.source}")


@cli.command()
@click.pass_context
def cleanup(ctx):
    """Finish the rollback of launchers that were killed: processes, mounts, cgroups, layers;
    terminate compute systems nspawn owns that no live launcher holds; remove what such
    containers left with HCS that no journal names any more."""
    from nspawn.maintenance import cleanup as steps

    reporter = _reporter(ctx)
    failed = False
    for step in steps():
        if step.ok:
            click.echo(step.line)
        else:
            failed = True
            reporter.error(step.line)
    ctx.exit(exitcodes.LAUNCHER if failed else exitcodes.OK)


@cli.command()
@click.option("--backend", type=click.Choice(["auto", "hcs", "linux"]), default="auto")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Also judge this config against the host (its parent layer, its limits).")
@click.pass_context
def doctor(ctx, backend, config_path):
    """Report what this host can do: isolation, and which limits will be enforced."""
    from nspawn.errors import ConfigError
    from nspawn.maintenance import doctor as diagnose

    try:
        checks = diagnose(backend, config_path)
    except ConfigError as e:
        _fail_config(ctx, e)
    for check in checks:
        click.echo(f"{'ok ' if check.ok else 'NO '} {check.name}: {check.detail}")
    ctx.exit(exitcodes.OK if all(check.ok for check in checks) else 1)

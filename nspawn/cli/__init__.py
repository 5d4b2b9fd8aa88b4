"""The `nspawn` command line: the group, and a registry of its commands by module. A command's
module is imported only when that command runs (or --help lists it), and heavy modules
(jsonschema, rich, backends) only when a command needs them: this is a launcher, and its
start-up is part of every run. The plain `run` forms do not come here at all (nspawn/entry.py).
"""

from __future__ import annotations

import os
import sys

import click

from nspawn import __version__, exitcodes

if os.environ.get("_NSPAWN_COMPLETE", "").startswith("powershell"):
    import nspawn.cli.completion  # noqa: F401 (registers the PowerShell class click's protocol looks up)

# Command name -> the module whose attribute of that name is the command.
COMMANDS = {
    "run": "nspawn.cli.run",
    "validate": "nspawn.cli.validate",
    "schema": "nspawn.cli.schema",
    "completion": "nspawn.cli.completion",
    "ps": "nspawn.cli.ps",
    "cleanup": "nspawn.cli.cleanup",
    "doctor": "nspawn.cli.doctor",
    "batch": "nspawn.batch.command",
    "pull": "nspawn.cli.pull",
    "images": "nspawn.cli.images",
    "rmi": "nspawn.cli.rmi",
    "prune": "nspawn.cli.prune",
    "worker": "nspawn.cli.worker",
}


class _Group(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        __import__(module)  # not importlib.import_module: importing importlib costs a few ms
        return getattr(sys.modules[module], name)

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
    _add_verbosity(ctx, verbose - quiet)


_VERBOSITY = "nspawn.verbosity"  # in ctx.meta, which every context of one invocation shares


def _add_verbosity(ctx, amount: int) -> None:
    ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) + amount


def _verbosity_option(ctx, param, value):
    _add_verbosity(ctx, value if param.name == "verbose" else -value)


def verbosity_options(command):
    """-q and -v on a command too, so that `nspawn run -q` means `nspawn -q run`; both count."""
    for flags, name, text in ((("-v", "--verbose"), "verbose", "More output (also before the command)."),
                              (("-q", "--quiet"), "quiet", "Less output (also before the command).")):
        command = click.option(*flags, name, count=True, expose_value=False, callback=_verbosity_option,
                               help=text)(command)
    return command


def verbosity(ctx) -> int:
    """What -q and -v ask, before the command and after it (0 when none was given)."""
    return ctx.meta.get(_VERBOSITY, 0)


def reporter(ctx):
    from nspawn.ui import Reporter

    return Reporter(verbosity(ctx))

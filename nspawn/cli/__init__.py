"""The `nspawn` command line: the group, and a registry of its commands by module. A command's
module is imported only when that command runs (or --help lists it), and heavy modules
(jsonschema, rich, backends) only when a command needs them: this is a launcher, and its
start-up is part of every run. The plain `run` forms do not come here at all (nspawn/entry.py).
"""

from __future__ import annotations

import sys

import click

from nspawn import __version__, exitcodes

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
    ctx.obj = verbose - quiet


def verbosity(ctx) -> int:
    """What the group's -q and -v ask (0 for a command invoked on its own, without the group)."""
    return ctx.find_root().obj or 0


def reporter(ctx):
    from nspawn.ui import Reporter

    return Reporter(verbosity(ctx))

"""Writes nspawn/cli/run_help.txt, the `nspawn run --help` text nspawn.entry prints without
importing click: `python -m nspawn.cli.runhelp` after changing run's options or help."""

from __future__ import annotations


def render() -> str:
    """run's help as click prints it on a terminal of 80 columns or more (it formats for 78)."""
    from click.testing import CliRunner

    from nspawn.cli import cli

    return CliRunner().invoke(cli, ["run", "--help"], prog_name="nspawn", terminal_width=78).output


if __name__ == "__main__":
    from nspawn.entry import RUN_HELP

    with open(RUN_HELP, "w", encoding="utf-8") as f:
        f.write(render())

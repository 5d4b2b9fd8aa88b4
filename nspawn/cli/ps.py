"""`nspawn ps [--json]`."""

from __future__ import annotations

import click

from nspawn.cli import verbosity_options


@click.command()
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per container.")
def ps(as_json):
    """List the containers nspawn has running, and what killed launchers left."""
    from nspawn.maintenance import containers

    rows = containers()
    if as_json:
        import json

        for row in rows:
            click.echo(json.dumps(row._asdict()))
        return
    for row in rows:
        click.echo(f"{row.id}  {row.state:<11}  {row.backend:<5}  pid {row.launcher_pid}  {row.source}")

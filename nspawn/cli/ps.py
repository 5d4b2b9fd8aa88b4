"""`nspawn ps [--json]`."""

from __future__ import annotations

import click

from nspawn.cli import verbosity_options


HEADER = ("ID", "STATE", "BACKEND", "PID", "AGE", "COMMAND", "SOURCE")


def age(seconds: float | None) -> str:
    """3s, 4m12s, 2h05m, 3d04h: the age column."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if seconds >= size:
            return f"{seconds // size}{unit}{seconds % size // smaller:02}{small_unit}"
    return f"{seconds}s"


def command_text(command: list | None) -> str:
    if not command:
        return "-"
    import shlex

    text = shlex.join(command)
    return text if len(text) <= 40 else text[:39] + "…"


def table(rows, now: float | None = None) -> list[str]:
    """The header and a line per container, in columns; the header also when there is none."""
    cells = [HEADER] + [(row.id, row.state, row.backend or "-", str(row.launcher_pid or "-"), age(row.age_seconds(now)),
                         command_text(row.command), row.source or "-") for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[-1]]) for line in cells]


@click.command()
@verbosity_options
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per container (id, state, backend, launcher_pid, source, resources, command, "
                   "started, age_seconds).")
def ps(as_json):
    """List the containers nspawn has running, and what killed launchers left."""
    from nspawn.maintenance import containers

    rows = containers()
    if as_json:
        import json

        for row in rows:
            click.echo(json.dumps(row.to_json(), ensure_ascii=False))
        return
    for line in table(rows):
        click.echo(line)

"""`nspawn images [--json]`."""

from __future__ import annotations

import click

from nspawn.cli import verbosity_options

HEADER = ("REFERENCE", "DIGEST", "SIZE", "LAST USED")


def size_text(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per reference (reference, digest, size, pulled, last_used, platform).")
@verbosity_options
def images(as_json):
    """List the images in the store by reference: digest, unpacked size, when a run last used it."""
    import json
    import time

    from nspawn.cli.ps import age
    from nspawn.images.manage import listed

    rows = listed()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_json(), ensure_ascii=False))
        return
    now = time.time()
    cells = [HEADER] + [(row.reference, row.digest[:19], size_text(row.size),
                         age(now - row.last_used) + " ago" if row.last_used else "never") for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER) - 1)]
    for line in cells:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[-1]]))

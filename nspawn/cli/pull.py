"""`nspawn pull REF`."""

from __future__ import annotations

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options


class _PlainProgress:
    """One line per layer when it is done (not a terminal: logs and CI)."""

    def __init__(self, echo):
        self.echo, self.sizes = echo, {}

    def layer(self, digest, size):
        self.sizes[digest] = size

    def advance(self, digest, amount):
        pass

    def done(self, digest, how):
        self.echo(f"{digest[:19]}: {how} ({self.sizes.get(digest, 0)} bytes)")


class _RichProgress:
    """A bar per layer with bytes, speed and time left (a terminal)."""

    def __init__(self, console):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), console=console)
        self.tasks = {}

    def layer(self, digest, size):
        self.tasks[digest] = self.bars.add_task(digest[7:19], total=size)

    def advance(self, digest, amount):
        self.bars.advance(self.tasks[digest], amount)

    def done(self, digest, how):
        task = self.tasks[digest]
        self.bars.update(task, completed=self.bars.tasks[task].total, description=f"{digest[7:19]} {how}")


@click.command()
@click.argument("reference")
@click.option("--platform", "platform_text", help="os/architecture[/variant] to pull (default: this host's).")
@verbosity_options
@click.pass_context
def pull(ctx, reference, platform_text):
    """Pull an image into the store ($NSPAWN_STORE, default /var/lib/nspawn): only the layers
    it lacks, each verified by size and digest and unpacked once. A registry on loopback, or
    named in NSPAWN_INSECURE_REGISTRIES (comma-separated), may answer in plain HTTP."""
    from nspawn.errors import NspawnError
    from nspawn.images.manifest import ManifestError, parse_platform
    from nspawn.images.pull import pull as pull_image
    from nspawn.images.reference import ReferenceError, parse
    from nspawn.images.store import Store

    shown = reporter(ctx)
    try:
        ref = parse(reference)
        platform = parse_platform(platform_text) if platform_text else None
    except (ReferenceError, ManifestError) as e:
        shown.error(str(e))
        ctx.exit(exitcodes.USAGE)
    progress = _RichProgress(shown.console) if shown.console is not None else _PlainProgress(
        lambda line: click.echo(line, err=True) if shown.verbosity >= 0 else None)
    bars = getattr(progress, "bars", None)
    try:
        if bars is not None:
            bars.start()
        try:
            record = pull_image(ref, Store(), platform=platform, progress=progress)
        finally:
            if bars is not None:
                bars.stop()
    except KeyboardInterrupt:
        shown.error(f"the pull of {ref} was interrupted; nothing of it is used, and the next pull goes on from "
                    "the layers already complete")
        ctx.exit(exitcodes.from_signal(2))
    except (NspawnError, OSError) as e:
        from nspawn.result import error_text

        shown.error(f"cannot pull {ref}: {error_text(e) if isinstance(e, OSError) else e}")
        ctx.exit(getattr(e, "exit_code", exitcodes.LAUNCHER))
    click.echo(f"{ref} {record['digest']}")

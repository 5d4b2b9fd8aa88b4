"""`nspawn completion bash|zsh|fish`."""

from __future__ import annotations

import click


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx, shell):
    """Print the shell completion script: eval "$(nspawn completion bash)"."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(ctx.find_root().command, {}, "nspawn", "_NSPAWN_COMPLETE")
    click.echo(completer.source())

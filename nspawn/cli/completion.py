"""`nspawn completion bash|zsh|fish|powershell`.

click 8 has bash, zsh and fish; PowerShell (the shell nspawn's Windows users have) is added
here as one more click completion class, speaking the same protocol as the others: the script
calls nspawn with _NSPAWN_COMPLETE=powershell_complete and the command line so far in the
environment, and nspawn answers one completion a line."""

from __future__ import annotations

import os

import click
from click.shell_completion import ShellComplete, add_completion_class, split_arg_string

SHELLS = ["bash", "zsh", "fish", "powershell"]

_POWERSHELL_SOURCE = """\
Register-ArgumentCompleter -Native -CommandName %(prog_name)s, %(prog_name)s.exe -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $line = $commandAst.ToString()
    $upTo = [Math]::Min([Math]::Max($cursorPosition - $commandAst.Extent.StartOffset, 0), $line.Length)
    $env:COMP_WORDS = $line.Substring(0, $upTo)
    $env:COMP_INCOMPLETE = $wordToComplete
    $env:%(complete_var)s = "powershell_complete"
    try {
        $answers = & %(prog_name)s 2>$null
    } finally {
        Remove-Item Env:%(complete_var)s, Env:COMP_WORDS, Env:COMP_INCOMPLETE -ErrorAction SilentlyContinue
    }
    foreach ($answer in $answers) {
        $kind, $value, $help = $answer -split "`t", 3
        if ($kind -eq "file" -or $kind -eq "dir") {
            # Paths: PowerShell's own completion, in the kind asked.
            Get-ChildItem -Path "$wordToComplete*" -Directory:($kind -eq "dir") -ErrorAction SilentlyContinue |
                ForEach-Object {
                    [System.Management.Automation.CompletionResult]::new($_.FullName, $_.Name, "ProviderItem", $_.FullName)
                }
        } elseif ($value) {
            if (-not $help) { $help = $value }
            [System.Management.Automation.CompletionResult]::new($value, $value, "ParameterValue", $help)
        }
    }
}
"""


class PowerShellComplete(ShellComplete):
    """PowerShell, through Register-ArgumentCompleter -Native."""

    name = "powershell"
    source_template = _POWERSHELL_SOURCE

    def get_completion_args(self):
        words = split_arg_string(os.environ.get("COMP_WORDS", ""))
        incomplete = os.environ.get("COMP_INCOMPLETE", "")
        if incomplete and words and words[-1] == incomplete:
            words = words[:-1]
        return words[1:], incomplete

    def format_completion(self, item) -> str:
        help_text = " ".join((item.help or "").split())
        return f"{item.type}\t{item.value}\t{help_text}"


add_completion_class(PowerShellComplete)


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx, shell):
    """Print the shell completion script: eval "$(nspawn completion bash)";
    PowerShell: nspawn completion powershell | Out-String | Invoke-Expression (in $PROFILE to keep it)."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(ctx.find_root().command, {}, "nspawn", "_NSPAWN_COMPLETE")
    click.echo(completer.source())

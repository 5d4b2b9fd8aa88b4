"""The launcher's exit codes: the container process's own, or one of these."""

OK = 0
USAGE = 2  # bad command line or config file
TIMEOUT = 124  # the wall-clock timeout expired and the container was stopped
LAUNCHER = 125  # the launcher or the backend failed
CANNOT_EXECUTE = 126  # the executable was found but could not be started
NOT_FOUND = 127  # the executable was not found
SIGNAL_BASE = 128  # 128+N: the container process was killed by signal N

HELP = """\b
Exit codes:
  N      the container process exited with code N
  2      usage or config error (nothing was made)
  124    the --timeout expired; the container was stopped
  125    launcher or backend failure (everything made was rolled back)
  126    the executable was found but could not be started
  127    the executable was not found
  128+N  the container process was killed by signal N (137: out of memory or killed)"""


def from_signal(signum: int) -> int:
    return SIGNAL_BASE + signum

"""Run one executable in an isolated container described by a JSON config."""

__version__ = "0.1.0"


def run(config, **kwargs):
    """Run a validated config to completion; the API the `run` and `batch` commands use.

    `config` is a :class:`nspawn.config.model.Config`, made by
    ``nspawn.config.resolve.load_config(path, overrides, host=True)``. Returns a
    :class:`nspawn.result.Result` (exit code, phase timings, limits applied and not enforced,
    what was rolled back, peak memory) and never raises for a failed run; everything the run
    made has been released when it returns. Keyword arguments:

    - ``stdout``, ``stderr``: binary streams the container's output is copied to (default: the
      launcher's own);
    - ``listener(event, details)``: hears phases, warnings and the container's init pid;
    - ``container_id``: the id its journal, cgroups and scratch dir are named by;
    - ``stop``: a :class:`nspawn.session.Stop` owned by the caller, for runs on worker threads:
      ``stop.ask(signum)`` from any thread stops the run (politely, then after the config's
      grace firmly). Without it, SIGINT and SIGTERM stop a run on the main thread.
    """
    from nspawn.launch import run as _run

    return _run(config, **kwargs)

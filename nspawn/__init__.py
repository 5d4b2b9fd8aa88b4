"""Run one executable in an isolated container described by a JSON config."""

__version__ = "0.1.0"


def run(config, **kwargs):
    """Run a validated :class:`nspawn.config.model.Config`; returns a :class:`nspawn.result.Result`."""
    from nspawn.launch import run as _run

    return _run(config, **kwargs)

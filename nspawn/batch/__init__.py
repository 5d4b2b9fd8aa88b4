"""Many configs, one command: `nspawn batch`."""

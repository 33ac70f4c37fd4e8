"""Report tools run from the repository root: `python -m tools.eval` and `python -m tools.bench`."""

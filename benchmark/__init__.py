"""privbench core: contracts, registries, data, task models, metrics, runner, reports and CLI."""

__version__ = "0.1.0"

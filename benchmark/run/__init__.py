"""The run pipeline: suite YAML to frozen specs (config), plan, plugin loading, the runner and its executors,
evaluation and scoring of a cell, isolation of plugin code, the artifact cache and the freshness check."""

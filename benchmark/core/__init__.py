"""The shared kernel: errors, threat models, seeding, hashing, frozen specs, the plugin contracts, the registries,
records, statistics, calibration, code hashes and provenance. It imports nothing of the project above it."""

"""Privacy operations shared by defenses, attacks and the run: DP accounting, per-sample gradients, entropy coding,
regions and the DP audit. Imports only :mod:`privbench.core`."""

"""slurm-bridge: grow a Slurm GPU cluster into cloud regions that respect data residency."""

__version__ = "0.1.0.dev0"

"""A real Slurm 22.05 cluster on one machine, for the demo and the tests.

Every host is a network namespace with its own address and hostname; every
daemon is the real Debian binary. Nothing here is used in production.
"""

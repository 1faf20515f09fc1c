"""Adapters: the outside world (Slurm, commands, SSH, databases) seen through Protocols. Never imports services."""

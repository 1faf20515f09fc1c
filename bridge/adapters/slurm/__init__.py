"""Slurm behind one interface (`SlurmClient`): the CLI with --json (local or over SSH) and slurmrestd."""

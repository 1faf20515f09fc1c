"""A small signed client of the gateway's API, for our own CLI commands (`bai-bridge sbatch`)."""

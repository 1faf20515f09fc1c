"""bridge: the Backend.AI manager API served on a Slurm cluster. Importing it has no side effects."""

__version__ = "0.2.0.dev0"

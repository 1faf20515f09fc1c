"""`python -m bridge` is the `bai-bridge` command."""

from bridge.cli import main

main()

"""`python -m diffusia`: the `diffusia` command."""

from diffusia.cli import main

main()

"""`python -m diffusia.cli`: the `diffusia` command."""

from diffusia.cli import main

main()

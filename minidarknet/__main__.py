"""`python -m minidarknet ...`: the same as the `minidarknet` command."""
from .cli import main

main()

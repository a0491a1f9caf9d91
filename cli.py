#!/usr/bin/env python3
"""`python cli.py ...` from a checkout: the same as the installed `minidarknet` command."""
from minidarknet.cli import main

if __name__ == "__main__":
    main()

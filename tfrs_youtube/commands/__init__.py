"""The `tfrs-youtube` subcommands, one module each: `add_parser(sub)` declares the command's
arguments, `run(args)` does the work and returns the exit code. `cli.main` turns a user-facing
error (a missing file, a bad config key, an unknown variant) into one line on stderr."""

import sys


def note(*parts) -> None:
    """Progress and notes go to stderr, so that stdout carries only a command's result (JSON)."""
    print(*parts, file=sys.stderr, flush=True)

"""The one exception type for errors a user can cause, and the CLI guard that reports it."""

import functools
import sys


class JaxsegError(Exception):
    """A bad path, format or value supplied by the user. Its message is one line."""


def cli_guard(main):
    """Run a CLI entry point; a JaxsegError becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except JaxsegError as err:
            message = " ".join(str(err).split())  # always one line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return guarded

"""The one exception type for errors a user can cause, and the CLI guard that reports it."""

import functools
import os
import signal
import sys


class JaxsegError(Exception):
    """A bad path, format or value supplied by the user. Its message is one line."""


def cli_guard(main):
    """Run a CLI entry point; a JaxsegError becomes one line on stderr and exit code 2, Ctrl-C
    one line and exit code 130 (files are written atomically, so nothing is half-written)."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except JaxsegError as err:
            message = " ".join(str(err).split())  # always one line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C before a loop's own handler is installed
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return guarded


def exit_on_interrupt():
    """From now on Ctrl-C (SIGINT) exits at once with code 130 and one line: no traceback from
    inside JAX's start-up or compilation, and no crash in interpreter teardown while XLA threads
    run. Files are written atomically, so nothing is half-written. The training loop installs
    its own handler (save, then stop) while it runs."""

    def interrupted(_signum, _frame):
        os.write(2, b"interrupted\n")
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)

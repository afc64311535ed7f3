"""The one exception type for errors a user can cause, and the CLI guard that reports it."""

import functools
import os
import signal
import sys
import threading


# A training run stopped by a signal did not finish: 75 (EX_TEMPFAIL, "try again") after
# SIGTERM, the shell's 130 after Ctrl-C; a finished run exits 0. Schedulers requeue on these.
STOPPED_EXIT_CODES = {"SIGTERM": 75, "SIGINT": 130}


class JaxsegError(Exception):
    """A bad path, format or value supplied by the user. Its message is one line. An `abandon`
    attribute (a function) marks an error after which background threads of a failed write
    still run: the CLI guard calls it (cleanup), reports the error and exits at once."""


def cli_guard(main):
    """Run a CLI entry point; a JaxsegError becomes one line on stderr and exit code 2, Ctrl-C
    one line and exit code 130 (files are written atomically, so nothing is half-written)."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except JaxsegError as err:
            message = " ".join(str(err).split())  # always one line
            abandon = getattr(err, "abandon", None)
            if abandon is not None:  # a failed write's threads still run: clean up, stop them
                abandon()
                sys.stdout.flush()
                os.write(2, f"error: {message}\n".encode())
                os._exit(2)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C before a loop's own handler is installed
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return guarded


def exit_on_interrupt():
    """From now on Ctrl-C (SIGINT) exits at once with code 130 and one line: no traceback from
    inside JAX's start-up or compilation, and no crash in interpreter teardown while XLA threads
    run, and at once even while XLA compiles (`_watch_signals`). Files are written atomically,
    so nothing is half-written. The training loop installs its own handler (save, then stop)
    while it runs."""

    def interrupted(_signum, _frame):
        os.write(2, b"interrupted\n")
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)
    _watch_signals(interrupted)


def _watch_signals(interrupted):
    """A Python signal handler runs only when the main thread is back in Python: inside an XLA
    compilation (seconds to minutes) Ctrl-C would wait for it. Python's C-level handler also
    writes the signal's number to the wakeup fd at once; a thread reading it does what the
    handler would: exit at once, or, when the training loop's handler is installed (save, then
    stop), say that the run stops after the current step; the loop's handler may ask for the
    exit at once instead (`exits_at_once`: nothing done since the last checkpoint, or a second
    signal)."""
    try:
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread: the handler alone
        return

    def watch():
        while data := os.read(read, 64):
            for number in data:
                if number not in (signal.SIGINT, signal.SIGTERM):
                    continue
                handler = signal.getsignal(number)
                owner = getattr(handler, "__self__", None)
                if handler is interrupted:
                    interrupted(number, None)
                elif getattr(owner, "stops_after_step", False):
                    name = signal.Signals(number).name
                    if owner.exits_at_once():  # nothing to save, or the second signal
                        os.write(2, f"{owner.at_once_message(name)}\n".encode())
                        os._exit(STOPPED_EXIT_CODES[name])
                    os.write(2, f"{name}: stopping after the current step (a checkpoint is "
                                "saved; again to exit at once)\n".encode())

    threading.Thread(target=watch, name="jaxseg-signals", daemon=True).start()

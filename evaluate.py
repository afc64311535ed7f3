"""Shim: `python evaluate.py ...` runs jaxseg.cli.evaluate (see `python evaluate.py --help`)."""

import sys

from jaxseg.errors import exit_on_interrupt

exit_on_interrupt()  # before JAX loads: Ctrl-C at start-up exits 130 without a traceback
from jaxseg.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

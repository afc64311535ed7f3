"""Shim: `python synthesize.py ...` runs jaxseg.cli.synthesize (see `python synthesize.py --help`)."""

import sys

from jaxseg.cli import start_process

if __name__ == "__main__":
    start_process()  # before JAX loads: Ctrl-C exits 130 without a traceback; the CPU heap
    from jaxseg.cli.synthesize import main

    sys.exit(main())

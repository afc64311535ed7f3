"""Shim: `python train.py ...` runs jaxseg.cli.train (see `python train.py --help`)."""

import sys

from jaxseg.cli import start_process

if __name__ == "__main__":
    start_process()  # before JAX loads: Ctrl-C exits 130 without a traceback; the CPU heap
    from jaxseg.cli.train import main

    sys.exit(main())

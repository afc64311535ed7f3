"""Shim: `python train.py ...` runs jaxseg.cli.train (see `python train.py --help`)."""

import sys

from jaxseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

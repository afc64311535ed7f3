"""Shim: `python evaluate.py ...` runs jaxseg.cli.evaluate (see `python evaluate.py --help`)."""

import sys

from jaxseg.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

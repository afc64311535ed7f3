"""Shim: `python synthesize.py ...` runs jaxseg.cli.synthesize (see `python synthesize.py --help`)."""

import sys

from jaxseg.cli.synthesize import main

if __name__ == "__main__":
    sys.exit(main())

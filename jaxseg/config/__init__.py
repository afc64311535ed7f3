"""Training configuration: every option with its default (base.py) and experiment files with
`--config.key=value` overrides from the command line (overrides.py)."""

from jaxseg.config.base import base, check
from jaxseg.config.overrides import (apply_overrides, load, parse_keyvalues, parse_number,
                                     parse_value, split_overrides)

__all__ = ["base", "check", "apply_overrides", "load", "parse_keyvalues", "parse_number", "parse_value",
           "split_overrides"]

"""Experiment configs: a Python file with `get_config()` returning an ml_collections ConfigDict,
plus `--config.key=value` overrides from the command line (big_vision style, without absl)."""

import ast
import hashlib
import importlib.util
import math
import os
import re
import sys
import types

import ml_collections

from jaxseg.errors import JaxsegError


def _package_for(directory):
    """A package module whose path is `directory`, so that a config can derive from a sibling
    with `from . import parent` (as configs/ does) however it was named on the command line."""
    name = "jaxseg_configs_" + hashlib.sha1(directory.encode()).hexdigest()[:10]
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [directory]
        sys.modules[name] = package
    return name


def load(path):
    """`get_config()` of the Python file `path`."""
    if not os.path.isfile(path):
        raise JaxsegError(f"{path}: no such config file")
    directory = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{_package_for(directory)}.{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as err:
        raise JaxsegError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from err
    if not hasattr(module, "get_config"):
        raise JaxsegError(f"{path}: defines no get_config()")
    return module.get_config()


def parse_value(text):
    """'3' -> 3, '0.5' -> 0.5, '8/255' -> 0.0313..., 'true' -> True, '(1,2)' -> (1, 2), else str."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*", text):
        numerator, denominator = text.split("/", 1)
        if float(denominator) == 0:
            raise JaxsegError(f"{text!r}: division by zero")
        return float(numerator) / float(denominator)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_number(text, name):
    """A number from the command line ('0.5', '8/255'); `name` is the flag, for the error."""
    try:
        value = parse_value(str(text))
    except JaxsegError as err:
        raise JaxsegError(f"--{name}: {err}") from None
    word = str(text).strip().lower().lstrip("+-")
    if word in ("inf", "infinity"):
        raise JaxsegError(f"--{name}: {text!r} is infinite; give a finite number")
    if word == "nan":
        raise JaxsegError(f"--{name}: {text!r} is NaN; give a finite number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JaxsegError(f"--{name}: not a number: {text!r}")
    if not math.isfinite(value):
        raise JaxsegError(f"--{name}: not a finite number: {text!r}")
    return float(value)


def parse_size(text, name):
    """(H, W) of positive integers from 'H,W' on the command line."""
    parts = str(text).split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise JaxsegError(f"--{name}: expected H,W (two positive integers), got {text!r}")
    return size


def parse_keyvalues(items, name):
    """{'key': value} from repeated 'key=value' flags (values parsed as by `parse_value`)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise JaxsegError(f"--{name} {item!r} must look like key=value")
        pairs[key] = parse_value(value)
    return pairs


def apply_overrides(config, overrides):
    """`overrides`: strings 'a.b=value' (from '--config.a.b=value'). Unknown keys and values of
    the wrong type are errors naming the key."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise JaxsegError(f"override {item!r} must look like --config.key=value")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise JaxsegError(f"unknown config key {key!r}")
            node = node[part]
        if leaf not in node:
            raise JaxsegError(f"unknown config key {key!r}")
        try:
            # A string option takes the text as written ('none' is adv.mode's choice, not None).
            value = text if isinstance(node[leaf], str) else parse_value(text)
        except JaxsegError as err:
            raise JaxsegError(f"config key {key!r}: {err}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise JaxsegError(f"config key {key!r}: not a finite number: {text!r}")
        if isinstance(value, list):
            value = tuple(value)
        try:
            setattr(node, leaf, value)
        except (TypeError, ValueError) as err:
            raise JaxsegError(f"config key {key!r}: bad value {text!r} ({err})") from err
    return config


def split_overrides(argv):
    """(other args, ['a.b=value', ...]) from argv holding '--config.a.b=value' (or '... value')."""
    rest, overrides = [], []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if index + 1 >= len(argv):
                    raise JaxsegError(f"{arg} needs a value")
                body = f"{body}={argv[index + 1]}"
                index += 1
            overrides.append(body)
        else:
            rest.append(arg)
        index += 1
    return rest, overrides

"""argparse's own errors (an unknown flag, a missing or malformed value) are one line and exit
code 2 in every command, like every other error."""

import importlib

import pytest

from tests.helpers.cli import one_line_error, run_cli

COMMANDS = ["train", "evaluate", "synthesize", "port", "prepare", "plan", "coco", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_is_one_line(capsys, command):
    main = importlib.import_module(f"jaxseg.cli.{command}").main
    one_line_error(capsys, run_cli(main, "--no-such-flag"), "--help")


def test_a_negative_value_after_a_space_says_how_to_write_it(capsys):
    from jaxseg.cli import evaluate

    line = one_line_error(capsys, run_cli(evaluate.main, "--checkpoint", "c", "--output", "o",
                                          "--eps", "-1/255"), "argument --eps")
    assert "--eps=-1/255" in line
    one_line_error(capsys, run_cli(evaluate.main, "--checkpoint", "c", "--output", "o",
                                   "--eps=-1/255"), "eps must be >= 0")
    one_line_error(capsys, run_cli(evaluate.main, "--checkpoint", "c", "--output", "o",
                                   "--steps", "x"), "invalid int value: 'x'")

"""Calling a CLI entry point in-process and checking its one-line error."""

import contextlib
import io
import subprocess


def run_cli(main, *argv):
    """The exit code of `main(argv)` (cli_guard exits 2 on a JaxsegError)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


def one_line_error(capsys, code, text):
    """Exit code 2 and exactly one 'error:' line on stderr, containing `text`; returns it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and text in lines[0], err
    return lines[0]


def run_captured(main, *argv):
    """`main(argv)` in this process with its stdout and stderr captured, as a
    subprocess.CompletedProcess. Tests that call a CLI several times share its compiled
    programs this way; a process per call would compile them again."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(main, *argv)
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())

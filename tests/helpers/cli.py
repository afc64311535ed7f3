"""Calling a CLI entry point in-process and checking its one-line error."""


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

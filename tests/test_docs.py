"""Every Python block in README.md and docs/*.md runs (shapes as written, models and step counts
made small), and every flag of every command in their shell blocks is one the command accepts."""

import functools
import re
import shlex
import subprocess
import sys

import pytest

from jaxseg import config as configs
from tests.helpers import paths

DOCS = [paths.REPO / "README.md", *sorted((paths.REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The smallest model on the same code path, and a couple of steps: the blocks show real sizes.
SMALL = [(re.compile(r'"(fcn|deeplabv3)_resnet(50|101|26_w16)"'), r'"\1_resnet14_w8"'),
         (re.compile(r"\bsteps=(\d+)"), lambda m: f"steps={min(int(m[1]), 2)}")]


def blocks(path, languages):
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in languages]


def small(code):
    for pattern, replacement in SMALL:
        code = pattern.sub(replacement, code)
    return code


PYTHON_DOCS = [p for p in DOCS if blocks(p, {"python"})]


@pytest.mark.slow
@pytest.mark.parametrize("path", PYTHON_DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc_{path.stem}"}
    for number, code in enumerate(blocks(path, {"python"})):
        exec(compile(small(code), f"{path.name} python block {number}", "exec"), namespace)


def commands(path):
    """(argv after 'python', line) for each `python ...` command of the shell blocks."""
    found = []
    for body in blocks(path, {"", "bash", "sh", "shell"}):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"^(\w+=\S+\s+)+", "", line)  # VAR=value prefixes
            if line.startswith("python "):
                found.append((shlex.split(line)[1:], line))
    return found


@functools.lru_cache(maxsize=None)
def help_text(program):
    """`--help` of a command, e.g. ('train.py',) or ('-m', 'jaxseg.cli.port', 'import')."""
    result = subprocess.run([sys.executable, *program, "--help"], cwd=paths.REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(program)} --help failed: {result.stderr[-500:]}"
    return result.stdout


def program_of(argv):
    """The part of argv naming the command (module, script, subcommand)."""
    if argv[0] == "-m":
        program = argv[:2]
        if argv[1] == "jaxseg.cli.port":
            program = argv[:3]
        return tuple(program), argv[len(program):]
    return (argv[0],), argv[1:]


ALL_COMMANDS = [(path, argv, line) for path in DOCS for argv, line in commands(path)]


def test_the_docs_have_commands():
    names = {program_of(argv)[0][0] for _, argv, _ in ALL_COMMANDS}
    assert {"train.py", "evaluate.py", "synthesize.py", "-m"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path, argv, line", ALL_COMMANDS,
                         ids=[f"{p.name}:{i}" for i, (p, _, _) in enumerate(ALL_COMMANDS)])
def test_shell_commands_use_existing_flags(path, argv, line):
    program, rest = program_of(argv)
    text = help_text(program)
    base = configs.base()
    for token in rest:
        if token.startswith("--config."):
            configs.apply_overrides(base.copy_and_resolve_references(),
                                    [token[len("--config."):]])  # the key exists, the value parses
        elif token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", text), \
                f"{path.name}: {flag} is not a flag of {' '.join(program)} ({line})"


def test_the_readme_layout_names_every_module():
    """The README's layout lists every module of the package and every experiment (a new one
    must be placed)."""
    text = (paths.REPO / "README.md").read_text()
    layout = blocks_after(text, "## Layout")
    package = paths.REPO / "jaxseg"
    missing = [str(path.relative_to(paths.REPO)) for path in sorted(package.rglob("*.py"))
               if path.name != "__init__.py" and not re.search(rf"\b{re.escape(path.name)}",
                                                                 layout)]
    missing += [f"jaxseg/{d.name}/" for d in sorted(package.iterdir())
                if d.is_dir() and (d / "__init__.py").exists() and f"{d.name}/" not in layout]
    missing += [f"experiments/{path.name}" for path in sorted((paths.REPO / "experiments").glob(
        "*.py")) if f"experiments/{path.name}" not in layout]
    assert not missing, f"README's layout omits {missing}"


def blocks_after(text, heading):
    """The first fenced block after `heading`."""
    return FENCE.search(text[text.index(heading):])[2]

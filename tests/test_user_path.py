"""A user's path, walked as the README writes it: a fresh clone with no shared data beside it,
`prepare camvid` (from a loopback mirror standing in for the official source), then the
README's commands that reproduce the CamVid table, on a few images (--smoke)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import paths
from tests.helpers.mirror import Server, camvid_zip

README = paths.REPO / "README.md"


def reproduction_commands():
    """The shell block under the README's "Reproducing the CamVid table" heading."""
    text = README.read_text()
    section = text[text.index("### Reproducing the CamVid table"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def test_the_readme_names_the_reproduction_commands():
    commands = reproduction_commands()
    assert commands == ["python -m jaxseg.cli.prepare camvid --download",
                        "python experiments/camvid.py"]


@pytest.mark.slow
def test_a_fresh_clone_reproduces_the_camvid_table_on_a_few_images(tmp_path):
    if shutil.which("git") is None or not (paths.REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "alone" / "jaxseg"  # no shared data folder beside it
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(paths.REPO), str(clone)],
                   check=True, timeout=120)
    env = dict(os.environ, PYTHONPATH=str(clone))  # the clone's code, not this checkout's
    mirror = Server({"master.zip": camvid_zip()})
    try:
        extra = {"prepare": ["--mirror", mirror.url], "experiments/camvid.py": ["--smoke"]}
        for command in reproduction_commands():
            argv = command.split()
            argv += next(flags for key, flags in extra.items() if key in command)
            result = subprocess.run([sys.executable, *argv[1:]], cwd=clone, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    finally:
        mirror.close()
    assert (clone / "data" / "camvid" / "val.txt").exists()  # where prepare put it
    summary = (clone / "workdirs" / "smoke_published" / "summary.md").read_text()
    assert re.search(r"^\| standard \| \d", summary, re.M) and re.search(r"^\| AT \| \d",
                                                                          summary, re.M)
    published = "docs/results/camvid/summary.md"  # a smoke run leaves the real figures alone
    assert (clone / published).read_text() == (paths.REPO / published).read_text()

"""A user's `git clone` has no ../shared beside it: the tests that read outside the repository
must still pass there (parity on generated scenes) or skip with a reason (the tests that read
the real CamVid layout)."""

import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import paths

TESTS = paths.REPO / "tests"


def test_only_the_paths_helper_names_the_shared_folder():
    """Every test reaches ../shared through tests/helpers/paths.py (so the clone test below
    covers them all), never by a path of its own."""
    offenders = [str(path.relative_to(paths.REPO)) for path in TESTS.rglob("*.py")
                 if path.name != "paths.py" and re.search(r"[\"'][^\"']*\.\./shared", path.read_text())
                 and "paths.CAMVID.is_dir()" not in path.read_text()]
    assert offenders == []


def files_reading_outside_the_repo():
    return sorted(str(path.relative_to(paths.REPO)) for path in TESTS.rglob("test_*.py")
                  if re.search(r"paths\.CAMVID|torch_reference|\.\./shared", path.read_text()))


@pytest.mark.slow
def test_the_fast_tests_that_read_outside_the_repo_pass_in_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or not (paths.REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "alone" / "jaxseg"  # no shared/ beside it
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(paths.REPO), str(clone)],
                   check=True, timeout=120)
    where = subprocess.run([sys.executable, "-c", "import jaxseg; print(jaxseg.__file__)"],
                           cwd=clone, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(clone)), where  # the clone's code, not ours
    files = files_reading_outside_the_repo()
    assert "tests/models/test_fcn.py" in files and "tests/data/test_folders.py" in files
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-m", "not slow", "-rs", *files], cwd=clone, capture_output=True,
                            text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    # Only the test that reads the real CamVid folder layout skips, and it says why.
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "CamVid copy absent" in skipped[0], skipped
    assert "failed" not in summary and "error" not in summary, summary

"""The docs' shell blocks, run as written.

README.md: a fresh clone with no shared data beside it, every shell block in order (bash, the
page's own lines): `prepare camvid` from a loopback mirror standing in for the official source,
the CamVid experiment, ports, training, evaluation, synthesis and the plan. What a reader is
assumed to bring (downloaded weights, their own checkpoints, a photo, COCO) is a stand-in of the
same format (tests/helpers/doc_world.py), and every command runs at the smallest size: the
`python` on the PATH cuts steps, images and sizes and moves /data paths into the test's folder.

docs/RESULTS.md: every shell block, in order, in the same clone after the README's (the
experiment, its calls by hand, the sweep and architecture drivers with --smoke); its list of
the experiment's calls must also be the calls experiments/camvid.py makes (recorded by bash).
docs/data.md: the `prepare` commands run against the mirror. The flags of every command of every
page are checked by tests/test_docs.py."""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.helpers import doc_world, paths
from tests.helpers.mirror import Server, all_archives, camvid_zip
from tests.test_experiments import _load_driver

README = paths.REPO / "README.md"
RESULTS = paths.REPO / "docs" / "RESULTS.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = ("sh", "bash", "shell", "")
# make runs the suite itself (test, test-fast) and the demo: the walk cannot run them inside
# the suite; they are the README's first lines, and CI runs `make test`.
MAKE = {"demo", "test", "test-fast"}
PRELUDE = ("make() { case \" demo test test-fast \" in *\" $1 \"*) "
           "echo \"(make $1: not run inside the suite)\";; *) return 1;; esac; }\n")


def shell_blocks(path):
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in SHELL]


def reproduction_commands():
    """The shell block under the README's "Reproducing the CamVid table" heading."""
    text = README.read_text()
    section = text[text.index("### Reproducing the CamVid table"):]
    block = FENCE.search(section)[2]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def test_the_readme_names_the_reproduction_commands():
    assert reproduction_commands() == ["python -m jaxseg.cli.prepare camvid --download",
                                       "python experiments/camvid.py"]


def test_the_make_lines_are_the_ones_the_walk_leaves_out():
    lines = [line.split("#", 1)[0].split() for block in shell_blocks(README)
             for line in block.splitlines() if line.startswith("make ")]
    assert {line[1] for line in lines} == MAKE


def run_block(body, cwd, env, label):
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", PRELUDE + body], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (label, body, result.stdout[-4000:], result.stderr[-4000:])
    return result.stdout


@pytest.mark.slow
def test_a_fresh_clone_runs_every_readme_and_results_command(tmp_path):
    if shutil.which("git") is None or not (paths.REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "alone" / "jaxseg"  # no shared data folder beside it
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(paths.REPO), str(clone)],
                   check=True, timeout=120)
    # What the reader brings, in the clone (downloads, checkpoints, a photo) and at /data/coco.
    world = tmp_path / "world"
    doc_world.weights(clone)
    doc_world.checkpoints(clone)
    doc_world.photo(clone)
    doc_world.coco(world / "data" / "coco")
    doc_world.install_python(tmp_path / "bin", clone / ".venv" / "bin" / "python")
    # 85 val images: the README synthesises val image 3, RESULTS.md names images up to 84
    mirror = Server({"master.zip": camvid_zip(val=85)})
    env = dict(os.environ, PYTHONPATH=str(clone), DOC_MIRROR=mirror.url, DOC_WORLD=str(world),
               PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    outputs = []
    try:
        for number, body in enumerate(shell_blocks(README)):
            outputs.append(run_block(body, clone, env, f"README.md shell block {number}"))
    finally:
        mirror.close()
    # docs/RESULTS.md on the data and runs the README left: its first block is the README's
    # experiment again (every step found done), the second its calls by hand, then one SEA
    # evaluation and the sweep and architecture drivers (each at the smallest size).
    for number, body in enumerate(shell_blocks(RESULTS)):
        run_block(body, clone, env, f"RESULTS.md shell block {number}")

    assert (clone / "data" / "camvid" / "val.txt").exists()  # where prepare put it
    summary = (clone / "workdirs" / "smoke" / "published" / "summary.md").read_text()
    assert re.search(r"^\| standard \| \d", summary, re.M)
    assert re.search(r"^\| AT \| \d", summary, re.M)
    published = "docs/results/camvid/summary.md"  # a smoke run leaves the real figures alone
    assert (clone / published).read_text() == (paths.REPO / published).read_text()
    for made in ("ckpt/pre", "ckpt/imnet", "ckpt/rb", "ckpt/deeplab", "ckpt/lraspp_imnet",
                 "fcn_resnet50_at.pth", "workdirs/demo",
                 "workdirs/at50", "out/inpaint/grid.png", "out/gen/grid.png",
                 "out/edit/grid.png", "results/table1/results.md"):
        assert (clone / made).exists(), made
    table = (clone / "results" / "table1" / "results.md").read_text()  # the last evaluation's
    assert re.search(r"^\| AT-50 \| worst case \|", table, re.M), table
    assert "GFLOP" in outputs[-1] or "FLOP" in outputs[-1]  # the plan's table

    assert (clone / "workdirs" / "results" / "eval_sea_4_standard" / "results.json").exists()
    smoke = clone / "workdirs" / "smoke"
    sweep = (smoke / "alignment_sweep" / "published" / "summary.md").read_text()
    for name in ("standard", "Linf-2", "Linf-4", "Linf-8", "L2-0.5", "L2-1.0", "L2-2.0"):
        assert re.search(rf"^\| {re.escape(name)} \| .* \| -?\d\.\d{{3}} ± ", sweep, re.M), name
    assert (smoke / "alignment_sweep" / "published" / "alignment_vs_robustness.png").exists()
    architecture = (smoke / "architecture" / "published" / "summary.md").read_text()
    for name in ("FCN-standard", "FCN-Linf-4", "DeepLabV3-standard", "DeepLabV3-Linf-4"):
        assert re.search(rf"^\| {name} \| ", architecture, re.M), name
    changed = subprocess.run(["git", "status", "--porcelain", "--", "docs"], cwd=clone,
                             capture_output=True, text=True, check=True).stdout
    assert not changed, f"a smoke run wrote into the published results: {changed}"


@pytest.mark.slow
def test_the_prepare_commands_of_the_data_page_run(tmp_path):
    doc_world.install_python(tmp_path / "bin")
    archives = all_archives()
    mirror = Server(archives)
    md5 = hashlib.md5(archives["VOCtrainval_11-May-2012.tar"]).hexdigest()
    env = dict(os.environ, PYTHONPATH=str(paths.REPO), DOC_MIRROR=mirror.url, DOC_VOC_MD5=md5,
               DOC_WORLD=str(tmp_path / "world"),
               PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    blocks = [b for b in shell_blocks(paths.REPO / "docs" / "data.md") if "prepare" in b]
    assert blocks
    try:
        for number, body in enumerate(blocks):
            run_block(body, tmp_path, env, f"data.md prepare block {number}")
    finally:
        mirror.close()
    for made in ("data/camvid/val.txt", "data/VOCdevkit/VOC2012", "data/coco/annotations",
                 "world/scratch/datasets/camvid/val.txt"):
        assert (tmp_path / made).exists(), made


def recorded(body, tmp_path):
    """The `python` calls of a shell block as bash expands them: (argv, JAXSEG_UNROLL)."""
    log = tmp_path / "calls"
    log.unlink(missing_ok=True)
    recorder = (f'python() {{ printf "%s\\n" "${{JAXSEG_UNROLL:-}} $(printf "%q " "$@")" '
                f'>> {shlex.quote(str(log))}; }}\nmake() {{ :; }}\n')
    body = body.replace(".venv/bin/python ", "python ")  # the same interpreter, recorded
    subprocess.run(["bash", "-euo", "pipefail", "-c", recorder + body], check=True,
                   cwd=tmp_path, timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    return [(shlex.split(line.split(" ", 1)[1]), line.split(" ", 1)[0] or None)
            for line in lines]


def test_the_results_page_lists_the_calls_the_camvid_experiment_makes(tmp_path):
    camvid = _load_driver()
    block = next(b for b in shell_blocks(paths.REPO / "docs" / "RESULTS.md")
                 if "python train.py --config configs/camvid_standard.py" in b)
    calls = recorded(block, tmp_path)
    cars = camvid.car_images(f"camvid:{paths.CAMVID}") if paths.CAMVID.exists() else None
    last = calls[-1][0]
    documented_cars = [int(last[i + 1]) for i, a in enumerate(last) if a == "--index"]
    expected = camvid.commands(camvid.DATA, "workdirs", cars or documented_cars)
    assert [argv for argv, _ in calls] == [argv for _, argv, _ in expected]
    assert [unroll == "on" for _, unroll in calls] == [label in camvid.UNROLLED
                                                       for label, _, _ in expected]
    if cars is None:
        pytest.skip(f"CamVid copy absent ({paths.CAMVID}): the car images were checked against "
                    "the page only, not the data")


def test_every_documented_command_expands_without_placeholders(tmp_path):
    """Run as the page's shell would, no command keeps a literal `...` or an unset variable."""
    for path in [README, *sorted((paths.REPO / "docs").glob("*.md"))]:
        for body in shell_blocks(path):
            for argv, _ in recorded(body, tmp_path):
                assert "..." not in argv, (path.name, argv)
                assert not any(a.startswith("$") for a in argv), (path.name, argv)


def test_the_walk_cuts_budgets_and_moves_absolute_paths():
    env = {"DOC_WORLD": "/tmp/w", "DOC_MIRROR": "http://m"}
    argv = doc_world.smaller(shlex.split(
        "evaluate.py --checkpoint a --data coco:/data/coco --short-side 520 --pad-to 520,1664 "
        "--attack sea --steps 300 --restarts 3 --output o"), env)
    assert argv == shlex.split(
        "evaluate.py --checkpoint a --data coco:/tmp/w/data/coco --short-side 48 "
        "--pad-to 48,160 --attack sea --steps 3 --restarts 1 --output o --num-images 2 "
        "--batch-size 2")
    assert doc_world.smaller(["synthesize.py", "inpaint", "--steps", "60"], env)[-1] == "2"
    assert doc_world.smaller(["synthesize.py", "inpaint"], env)[-2:] == ["--steps", "2"]
    assert doc_world.smaller(["-m", "jaxseg.cli.prepare", "camvid", "--download"], env)[-2:] \
        == ["--mirror", "http://m"]
    assert doc_world.smaller(["train.py", "--config", "x"], env)[3:] \
        == doc_world.smoke_train_flags()
    assert sys.executable  # the walk's `python` execs this interpreter

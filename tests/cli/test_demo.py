"""`make demo`: the Makefile's target runs jaxseg.cli.demo, and the demo's every step (both
trainings, the evaluation with its curve, inpainting, generation) and its summary run here in
smoke mode, each CLI in-process so that they share compiled programs."""

import re

import pytest

from tests.helpers import paths
from tests.helpers.cli import run_cli


def test_make_demo_runs_the_demo_module():
    makefile = (paths.REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)[1]
    assert recipe.split() == ["$(PY)", "-m", "jaxseg.cli.demo"]


def test_smoke_mode_runs_the_same_commands_with_smaller_budgets():
    from jaxseg.cli import demo

    full, smoke = demo.commands("out"), demo.commands("out", smoke=True)
    assert [c[:2] for c in full] == [c[:2] for c in smoke]  # the same programs, same order
    assert smoke[0][-len(demo.SMOKE_TRAIN):] == demo.SMOKE_TRAIN
    assert full[2][full[2].index("--num-images") + 1] == str(demo.EVAL_IMAGES)
    assert smoke[2][smoke[2].index("--num-images") + 1] == "2"


@pytest.mark.slow
def test_the_demo_runs_every_step_and_writes_its_summary(tmp_path, monkeypatch, capsys):
    from jaxseg.cli import demo, evaluate, synthesize, train

    mains = {"train.py": train.main, "evaluate.py": evaluate.main,
             "synthesize.py": synthesize.main}
    ran = []

    def in_process(command):
        ran.append(command[:2])
        assert run_cli(mains[command[0]], *command[1:]) == 0, command

    monkeypatch.setattr(demo, "run", in_process)
    monkeypatch.chdir(paths.REPO)  # where `make demo` runs it (configs/demo.py)
    output = tmp_path / "demo"
    assert run_cli(demo.main, "--smoke", "--output", output) in (0, None)
    assert [c[0] for c in ran] == ["train.py", "train.py", "evaluate.py", "synthesize.py",
                                   "synthesize.py"]
    summary = (output / "results.md").read_text()
    for name in demo.MODELS:
        assert re.search(rf"^\| {name} \| \d+\.\d \| \d+\.\d \| \d+\.\d \| \d+\.\d \|$", summary,
                         re.M), summary
    for made in ("eval/curve.png", "inpaint/grid.png", "generate/grid.png",
                 "workdirs/AT/checkpoints"):
        assert (output / made).exists(), made
    assert f"outputs in {output}/" in capsys.readouterr().out

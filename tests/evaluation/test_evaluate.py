"""evaluate.py end to end on a torchvision-format checkpoint brought in with jaxseg.cli.port."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from jaxseg import evaluation, models
from jaxseg.errors import JaxsegError
from jaxseg.evaluation import report
from jaxseg.models import port
from tests.helpers import paths
from tests.helpers.cli import run_captured

# One worker runs this file (make test: --dist loadgroup), so its module fixture is built once.
pytestmark = [pytest.mark.xdist_group("test_evaluate")]

REPO = str(paths.REPO)
SYNTHETIC = ["--data", "synthetic", "--data-arg", "size=(32,32)", "--num-images", "6",
             "--batch-size", "4"]


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    """A torchvision-layout .pth (7 synthetic classes) ported with the CLI, as a user would."""
    root = tmp_path_factory.mktemp("ported")
    model = models.build("fcn_resnet14_w8", num_classes=7)
    state = port.to_state_dict(models.init(model, jax.random.key(0)))
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, root / "model.pth")
    result = subprocess.run([sys.executable, "-m", "jaxseg.cli.port", "import", str(root / "model.pth"),
                             str(root / "ckpt")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return root / "ckpt"


def evaluation_info():
    from jaxseg.data import get_dataset

    return get_dataset("synthetic", "val", size=(32, 32)).info


def run(*args):
    """evaluate.py's main in this process: the tests' evaluations share one model's compiled
    programs."""
    from jaxseg.cli import evaluate as cli

    return run_captured(cli.main, *args)


@pytest.mark.slow
def test_table_json_and_curve(ported, tmp_path):
    out = tmp_path / "eval"
    result = run("--checkpoint", ported, "--name", "Pre", *SYNTHETIC, "--attack", "fgsm",
                 "--attack", "pgd:steps=3,restarts=2", "--steps", "2", "--eps-curve", "0,8/255",
                 "--show", "2", "--output", out)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["curve.json", "curve.png", "per_image", "results.json",
                                       "results.md", "show"]
    # pictures: per attack, 2 rows of image | adversarial | delta | 2 predictions | truth, a
    # legend of the 7 classes below; and the per-class IoU chart
    assert sorted(os.listdir(out / "show" / "Pre")) == ["fgsm.png", "iou.png", "pgd.png"]
    grid = np.asarray(Image.open(out / "show" / "Pre" / "pgd.png"))
    assert grid.shape[1] == 6 * 32 + 5 * 2 and grid.shape[0] > 14 + 2 * 32 + 2
    palette = {tuple(c) for c in evaluation_info().palette}
    assert palette <= {tuple(p) for p in grid.reshape(-1, 3)}  # every class colour, in the legend
    assert "pictures of the first 2 images per attack" in result.stdout
    assert sorted(os.listdir(out / "per_image" / "Pre")) == ["clean.npz", "fgsm.npz", "pgd.npz"]
    table = (out / "results.md").read_text()
    assert "| Pre | clean |" in table and "| Pre | fgsm |" in table and "| Pre | pgd |" in table
    report = json.loads((out / "results.json").read_text())
    # every attack's settings, in the JSON and the table's header: pgd's own before --steps
    assert report["attacks"]["pgd"] | {"step_size": None} == {
        "row": "pgd", "name": "pgd", "steps": 3, "restarts": 2, "loss": "ce", "norm": "linf",
        "step_size": None}
    assert report["attacks"]["fgsm"]["steps"] == 1
    assert "- pgd: 3 steps, 2 restart(s), step size 0.02614, loss ce, linf" in table
    clean = report["results"]["Pre"]["clean"]
    assert report["images"] == 6 and clean["pixels"] == 6 * 32 * 32
    assert set(clean["iou"]) == {"background", "disc", "ring", "box", "tile", "triangle", "star"}
    curve = json.loads((out / "curve.json").read_text())["curves"]["Pre"]
    # eps 0 is the clean model: the curve's first point equals the clean row.
    assert curve[0]["eps"] == 0 and curve[0]["pixel_acc"] == pytest.approx(clean["pixel_acc"])
    # the curve is printed as a table with where it was written
    assert "| eps (pgd) | Pre acc / mIoU |" in result.stdout and "| 8/255 |" in result.stdout
    assert f"curve written to {out / 'curve.json'} and {out / 'curve.png'}" in result.stdout

    # --norm l2 applies to the curve too (eps 0.5 is an L2 radius, not 127.5/255); a run
    # without a curve leaves no earlier curve beside its results
    result = run("--checkpoint", ported, "--name", "Pre", *SYNTHETIC, "--norm", "l2",
                 "--steps", "1", "--eps", "0.5", "--eps-curve", "0.5", "--output", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "curve.json").read_text())
    assert report["norm"] == "l2" and "| L2 0.5 |" in result.stdout
    assert run("--checkpoint", ported, "--name", "Pre", *SYNTHETIC, "--output",
               out).returncode == 0
    assert not (out / "curve.json").exists() and not (out / "curve.png").exists()


@pytest.mark.slow
def test_split_metrics_equal_one_big_confusion(ported):
    """Batching and padding do not change the metrics: 6 images in batches of 4 (2 padded
    blanks) give the confusion matrix of the whole split computed at once."""
    from jaxseg import data, models

    model, variables = models.load(ported)
    dataset = data.get_dataset("synthetic", "val", size=(32, 32), num_examples=6)
    batched = evaluation.confusion_over(model, variables, data.eval_loader(dataset, 4))
    items = [dataset[i] for i in range(6)]
    images = np.stack([it["image"] for it in items]).astype(np.float32) / 255.0
    labels = np.stack([it["label"] for it in items]).astype(np.int32)
    whole = evaluation.confusion_over(model, variables, [{"image": images, "label": labels}])
    np.testing.assert_array_equal(batched, whole)
    assert batched.sum() == 6 * 32 * 32 - (labels == 255).sum()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--attack", "pgdx"], "unknown attack preset 'pgdx'"),
    (["--attack", "sea", "--class-counts", "/nonexistent.json"], "class counts file not found"),
    (["--attack", "sea", "--loss", "js"], "sea runs its own losses"),
    (["--num-images", "0"], "--num-images must be >= 1"),
    (["--num-images", "-1"], "--num-images must be >= 1"),
    (["--attack", "pgd", "--step-size", "8/0"], "--step-size: '8/0': division by zero"),
    (["--eps", "8/0"], "--eps: '8/0': division by zero"),
    (["--eps", "1e400"], "--eps: not a finite number"),
    (["--eps", "8"], "Linf eps must be in [0, 1]"),
    (["--eps", "-1"], "eps must be >= 0, got a negative value (-1)"),
    (["--eps=-1/255"], "eps must be >= 0, got a negative value (-0.00392157)"),
    (["--eps", "inf"], "--eps: 'inf' is infinite"),
    (["--eps", "nan"], "--eps: 'nan' is NaN"),
    (["--norm", "l2", "--eps", "60"], "L2 eps 60 is at least the diameter of a 32x32 image (55.43)"),
    (["--norm", "l2", "--eps", "1", "--eps-curve", "0,1,100"], "L2 eps 100 is at least"),
    (["--eps", "abc"], "--eps: not a number: 'abc'"),
    (["--pad-to", "abc"], "--pad-to: expected H,W (two positive integers), got 'abc'"),
])
def test_bad_arguments(ported, tmp_path, args, message):
    result = run("--checkpoint", ported, *SYNTHETIC, *args, "--output", tmp_path / "o")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_output_that_is_a_file_is_one_line(ported, tmp_path):
    (tmp_path / "o").write_text("keep me")
    result = run("--checkpoint", ported, *SYNTHETIC, "--output", tmp_path / "o")
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "o").read_text() == "keep me"


@pytest.mark.slow
def test_class_mismatch_and_missing_checkpoint(ported, tmp_path):
    if not paths.CAMVID.is_dir():
        pytest.skip(f"CamVid copy absent at {paths.CAMVID}")
    result = run("--checkpoint", ported, "--data", "camvid:../shared/data/camvid", "--output", tmp_path / "o")
    assert result.returncode == 2 and "model has 7 classes, data camvid:" in result.stderr
    result = run("--checkpoint", tmp_path / "none", *SYNTHETIC, "--output", tmp_path / "o")
    assert result.returncode == 2 and "no such checkpoint directory" in result.stderr
    assert not (tmp_path / "o").exists()


def test_per_image_counts_add_up_to_the_confusion_matrix(ported):
    """Per-image TP / FP / FN per class sum to the split's confusion matrix; every image is
    counted once, padding never (6 images in batches of 4)."""
    from jaxseg import attacks, data

    model, variables = models.load(ported)
    dataset = data.get_dataset("synthetic", "val", size=(32, 32), num_examples=6)
    spec = attacks.make("pgd", eps=8 / 255, steps=2)
    result = evaluation.evaluate_split(model, variables, data.eval_loader(dataset, 4), spec)
    confusion, counts = result.confusion, result.per_image
    assert sorted(counts.index.tolist()) == list(range(6))
    np.testing.assert_array_equal(counts.tp.sum(0), np.diag(confusion))
    np.testing.assert_array_equal(counts.fp.sum(0), confusion.sum(0) - np.diag(confusion))
    np.testing.assert_array_equal(counts.fn.sum(0), confusion.sum(1) - np.diag(confusion))


@pytest.mark.slow
def test_apgd_sea_and_the_worst_case_over_runs(ported, tmp_path):
    out = tmp_path / "eval"
    (tmp_path / "counts.json").write_text(json.dumps([50, 10, 10, 10, 10, 10, 10]))
    common = ["--checkpoint", ported, "--name", "M", *SYNTHETIC, "--eps", "8/255", "--steps", "3",
              "--class-counts", tmp_path / "counts.json", "--worst-case", "--quiet"]
    result = run(*common, "--attack", "apgd", "--loss", "js", "--attack", "sea", "--output", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())["results"]["M"]
    assert list(rows) == ["clean", "apgd-js", "sea/apgd_red-js", "sea/apgd_red-mce",
                          "sea/apgd_red-mce_bal", "sea", "worst case"]
    for name in ("apgd-js", "sea/apgd_red-js", "sea/apgd_red-mce", "sea/apgd_red-mce_bal"):
        for key in ("pixel_acc", "image_acc", "miou"):
            assert rows["sea" if name.startswith("sea/") else "worst case"][key] <= \
                rows[name][key] + 1e-9
    assert rows["worst case"]["attacks"] == ["apgd-js", "sea/apgd_red-js", "sea/apgd_red-mce",
                                             "sea/apgd_red-mce_bal"]
    assert "| M | worst case |" in (out / "results.md").read_text()
    # a later run at the same eps adds its attack to the stored ones, without re-attacking
    result = run(*common, "--attack", "pgd", "--output", out)
    assert result.returncode == 0, result.stderr
    later = json.loads((out / "results.json").read_text())["results"]["M"]
    assert later["worst case"]["attacks"] == ["apgd-js", "pgd", "sea/apgd_red-js",
                                              "sea/apgd_red-mce", "sea/apgd_red-mce_bal"]
    assert later["worst case"]["pixel_acc"] <= rows["worst case"]["pixel_acc"] + 1e-9


@pytest.mark.slow
def test_l2_sea_rows_and_a_worst_case_kept_apart_from_linf(ported, tmp_path):
    """--norm l2 evaluates in the per-image L2 ball (rows suffixed -l2); a worst case never
    mixes in Linf results stored at the same eps number."""
    out = tmp_path / "eval"
    (tmp_path / "counts.json").write_text(json.dumps([50, 10, 10, 10, 10, 10, 10]))
    common = ["--checkpoint", ported, "--name", "M", *SYNTHETIC, "--eps", "0.5", "--steps", "3",
              "--class-counts", tmp_path / "counts.json", "--worst-case", "--quiet",
              "--output", out]
    assert run(*common, "--attack", "pgd").returncode == 0  # Linf 0.5: stored per image
    result = run(*common, "--attack", "sea", "--norm", "l2")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "results.json").read_text())
    rows = report["results"]["M"]
    members = ["sea-l2/apgd_red-js", "sea-l2/apgd_red-mce", "sea-l2/apgd_red-mce_bal"]
    assert list(rows) == ["clean", *members, "sea-l2", "worst case"]
    assert rows["worst case"]["attacks"] == members
    assert report["norm"] == "l2" and "L2 eps 0.5 per image" in (out / "results.md").read_text()
    for name in members:
        assert rows["sea-l2"]["pixel_acc"] <= rows[name]["pixel_acc"] + 1e-9
    assert rows["sea-l2"]["pixel_acc"] <= rows["clean"]["pixel_acc"]
    # L2 budgets above 1 are fine; in Linf they are the 8-for-8/255 slip
    result = run("--checkpoint", ported, *SYNTHETIC, "--eps", "2", "--norm", "l2",
                 "--output", tmp_path / "o")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_worst_case_combines_only_the_same_model_and_data(ported, tmp_path):
    """Stored per-image results carry their model's and data's fingerprint: a worst case leaves
    out (and names) runs on other data, with no --attack combines the stored runs, and results
    of another model under the same --name are refused before anything is written."""
    out, lines = tmp_path / "eval", []
    common = dict(output=str(out), names=["M"], data="synthetic", data_kwargs={"size": (32, 32)},
                  num_images=6, batch_size=4, eps=8 / 255, steps=2, quiet=True, log=lines.append)
    first = report.evaluate_checkpoints([str(ported)], attacks=["fgsm"], **common)["M"]
    resized = report.evaluate_checkpoints([str(ported)], attacks=["bim"], short_side=40,
                                          worst=True, **common)["M"]
    assert resized["worst case"]["attacks"] == ["bim"]  # fgsm saw other images
    assert "M worst case: left out stored fgsm (on other data (short_side None))" in lines

    lines.clear()
    stored = report.evaluate_checkpoints([str(ported)], worst=True, **common)["M"]
    assert list(stored) == ["clean", "fgsm", "worst case"] and stored["fgsm"]["stored"]
    for key in ("pixel_acc", "miou", "image_acc"):  # the stored row, recomputed from its counts
        assert stored["fgsm"][key] == pytest.approx(first["fgsm"][key])
        assert stored["worst case"][key] == pytest.approx(first["fgsm"][key])
    assert "M worst case: left out stored bim (on other data (short_side 40))" in lines
    table = (out / "results.md").read_text()
    assert "| M | fgsm (stored) |" in table and "| M | worst case |" in table

    other = tmp_path / "other"
    model = models.build("fcn_resnet14_w8", num_classes=7)
    models.save(str(other), model, models.init(model, jax.random.key(1)))
    before = {p.name: p.read_bytes() for p in (out / "per_image" / "M").iterdir()}
    with pytest.raises(JaxsegError, match=rf"results of {ported} \(parameters \w+\) are stored "
                       rf"under --name M, which is now {other} \(parameters \w+\)"):
        report.evaluate_checkpoints([str(other)], attacks=["fgsm"], **common)
    assert {p.name: p.read_bytes() for p in (out / "per_image" / "M").iterdir()} == before
    result = run("--checkpoint", other, "--name", "M", *SYNTHETIC, "--output", out)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"results of {ported}" in result.stderr and f"which is now {other}" in result.stderr

"""synthesize.py end to end on the built-in scenes with tiny checkpoints, and its bad inputs."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import data, models
from jaxseg.cli import synthesize
from tests.helpers import paths

ROOT = str(paths.REPO)

SIZE = 32
DATA = ["--data", "synthetic", "--data-arg", f"size=({SIZE},{SIZE})"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two tiny 7-class checkpoints (different inits) and a 3-class one."""
    root = tmp_path_factory.mktemp("ckpt")
    model = models.build("fcn_resnet14_w8", num_classes=7)
    variables = models.init(model, jax.random.key(0), (SIZE, SIZE))
    # A second model: same shapes, perturbed weights (no second compile of init).
    other = jax.tree_util.tree_map(lambda v: v * 1.5, variables)
    models.save(root / "a", model, variables)
    models.save(root / "b", model, other)
    small = models.build("fcn_resnet14_w8", num_classes=3)
    models.save(root / "three", small, _zeros(small))
    return root


def _zeros(model):
    """Zero variables of the right shapes (only their class count matters to the test)."""
    abstract = jax.eval_shape(lambda: models.init(model, jax.random.key(0), (SIZE, SIZE)))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def run(argv):
    """The exit code of synthesize.main (cli_guard exits 2 on a JaxsegError)."""
    try:
        code = synthesize.main(argv)
    except SystemExit as err:
        code = err.code
    return code


@pytest.mark.slow
def test_inpaint_two_models_writes_grid_pngs_and_metrics(ckpts, tmp_path, capsys):
    out = tmp_path / "inp"
    code = run(["inpaint", "--checkpoint", str(ckpts / "a"), "--checkpoint", str(ckpts / "b"),
                "--name", "A", "--name", "B", *DATA, "--index", "0", "--index", "2",
                "--mask", "rect:4,6,14,12", "--steps", "4", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "descent: 100%" in captured.err and "8/8" in captured.err  # 4 steps x 2 models
    grid = Image.open(out / "grid.png")
    # 2 rows of original | target | start | A | B, with a title strip.
    assert grid.size == (5 * SIZE + 4 * 2, 14 + 2 * SIZE + 2)
    names = sorted(os.listdir(out / "raw"))
    for stem in ("00000", "00002"):
        for part in ("original", "target", "start", "mask", "A", "B", "A_pred", "B_pred"):
            assert f"{stem}_{part}.png" in names
    result = np.asarray(Image.open(out / "raw" / "00000_A.png"))
    original = np.asarray(Image.open(out / "raw" / "00000_original.png"))
    assert result.shape == original.shape == (SIZE, SIZE, 3)
    mask = np.asarray(Image.open(out / "raw" / "00000_mask.png")) > 0
    assert mask.sum() == 14 * 12 and mask[6:18, 4:18].all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["steps"] == 4 and metrics["settings"]["lam"] == 10.0
    assert [r["id"] for r in metrics["images"]] == ["00000", "00002"]
    for name in ("A", "B"):
        row = metrics["images"][0]["models"][name]
        assert set(row) >= {"psnr", "psnr_lowpass", "ssim", "hole_accuracy", "high_frequency",
                            "hole_accuracy_start", "ce", "ce_start"}
        assert 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1
        assert metrics["summary"][name]["psnr"] == pytest.approx(
            np.mean([r["models"][name]["psnr"] for r in metrics["images"]]))
    # The mean fill is the baseline: its pixel metrics are reported too.
    start = metrics["images"][0]["start"]
    assert start["high_frequency"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["summary"]["start"]["psnr"] == pytest.approx(
        np.mean([r["start"]["psnr"] for r in metrics["images"]]))
    assert "A: PSNR" in captured.out


@pytest.mark.slow
def test_generate_image_file_with_gif(ckpts, tmp_path, capsys):
    ds = data.get_dataset("synthetic", "val", size=(SIZE, SIZE))
    item = ds[1]
    Image.fromarray(item["image"]).save(tmp_path / "photo.png")
    Image.fromarray(item["label"]).save(tmp_path / "photo_mask.png")
    out = tmp_path / "gen"
    code = run(["generate", "--checkpoint", str(ckpts / "a"), "--image", str(tmp_path / "photo.png"),
                "--label", str(tmp_path / "photo_mask.png"), "--steps", "6", "--gif",
                "--frames", "4", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    gif = Image.open(out / "trajectory.gif")
    assert gif.n_frames == 4  # 6 steps: 3 snapshots every 2 steps plus the start
    assert (out / "raw" / "photo_a.png").exists() and (out / "grid.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    row = metrics["images"][0]["models"]["a"]
    assert metrics["settings"]["kind"] == "generate" and metrics["settings"]["frames"] == 3
    assert row["ce"] < row["ce_start"]
    assert metrics["images"][0]["hole_pixels"] == SIZE * SIZE


@pytest.mark.slow
def test_edit_swap_and_paint(ckpts, tmp_path, capsys):
    ds = data.get_dataset("synthetic", "val", size=(SIZE, SIZE))
    label = ds[0]["label"]
    present = [k for k in range(1, 7) if (label == k).any()]
    absent = [k for k in range(1, 7) if not (label == k).any()]
    a, b = ds.info.class_names[present[0]], ds.info.class_names[absent[0]]
    out = tmp_path / "swap"
    assert run(["edit", "--checkpoint", str(ckpts / "a"), *DATA, "--swap", f"{a}:{b}",
                "--steps", "2", "--output", str(out)]) == 0, capsys.readouterr().err
    target = np.asarray(Image.open(out / "raw" / "00000_target.png"))
    np.testing.assert_array_equal(target[label == present[0]], np.broadcast_to(
        ds.info.palette[absent[0]], target[label == present[0]].shape))
    hole = np.asarray(Image.open(out / "raw" / "00000_mask.png")) > 0
    np.testing.assert_array_equal(hole, label == present[0])
    out = tmp_path / "paint"
    assert run(["edit", "--checkpoint", str(ckpts / "a"), *DATA, "--paint", "4", "--mask",
                "rect:0,0,10,10", "--method", "generate", "--steps", "2",
                "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["kind"] == "generate" and metrics["settings"]["paint"] == "4"
    target = np.asarray(Image.open(out / "raw" / "00000_target.png"))
    assert (target[:10, :10] == ds.info.palette[4]).all()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    ds = data.get_dataset("synthetic", "val", size=(SIZE, SIZE))
    Image.fromarray(ds[0]["image"]).save(root / "img.png")
    Image.fromarray(ds[0]["label"]).save(root / "lab.png")
    Image.fromarray(ds[0]["label"][:16]).save(root / "short_lab.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "empty.png")
    small = data.get_dataset("synthetic", "val", size=(8, 8))[0]
    Image.fromarray(small["image"]).save(root / "tiny.png")
    Image.fromarray(small["label"]).save(root / "tiny_lab.png")
    return root


BAD = {
    "mask outside": (["inpaint", *DATA, "--mask", "rect:20,20,20,5"], "outside"),
    "empty mask": (["inpaint", *DATA, "--mask", "{files}/empty.png"], "empty"),
    "class absent": (["inpaint", *DATA, "--mask", "class:{absent}"], "not present"),
    "swap absent": (["edit", *DATA, "--swap", "{absent}:1"], "not present"),
    "too small": (["generate", "--data", "synthetic", "--data-arg", "size=(8,8)"], "too small"),
    "tiny file": (["generate", "--image", "{files}/tiny.png", "--label", "{files}/tiny_lab.png"],
                  "too small"),
    "label size": (["generate", "--image", "{files}/img.png", "--label", "{files}/short_lab.png"],
                   "label is 32x16"),
    "no label": (["generate", "--image", "{files}/img.png"], "needs its segmentation"),
    "no mask": (["inpaint", *DATA], "needs --mask"),
    "unknown checkpoint": (["generate", *DATA, "--checkpoint", "{files}/nope"], "no such checkpoint"),
    "class count": (["generate", *DATA, "--checkpoint", "{ckpts}/three"], "3 classes"),
    "index": (["generate", *DATA, "--index", "100000"], "out of range"),
    "frames": (["generate", *DATA, "--gif", "--frames", "0"], "--frames"),
    "lambda": (["inpaint", *DATA, "--mask", "rect:0,0,4,4", "--lambda", "-1"], "lambda"),
    "plain": (["generate", *DATA, "--rule", "plain"], "plain"),
    "paint in inpaint": (["inpaint", *DATA, "--paint", "1"], "belong to edit"),
    "edit both": (["edit", *DATA, "--swap", "1:2", "--paint", "3"], "exactly one"),
    "swap format": (["edit", *DATA, "--swap", "1"], "A:B"),
    "output is a file": (["generate", *DATA, "--output", "{files}/img.png"], "not a directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_one_line_exit_2_nothing_written(ckpts, files, tmp_path, capsys, case):
    argv, message = BAD[case]
    label = data.get_dataset("synthetic", "val", size=(SIZE, SIZE))[0]["label"]
    absent = next(k for k in range(1, 7) if not (label == k).any())
    argv = [a.format(files=files, ckpts=ckpts, absent=absent) for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(ckpts / "a")]
    out = tmp_path / "out"
    if "--output" not in argv:
        argv += ["--output", str(out)]
    assert run(argv + ["--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()

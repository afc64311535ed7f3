"""synthesize.py split over processes and devices: each process reads its own examples, process
0 gathers the results and writes the files a one-process run writes, byte for byte."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import models
from tests.helpers.multiprocess import assert_same_files, files, finished, launch


@pytest.mark.slow
def test_two_processes_and_eight_devices_write_the_same_files(tmp_path):
    model = models.build("fcn_resnet14_w8", num_classes=7)
    models.save(tmp_path / "ckpt", model, models.init(model, jax.random.key(0)))
    # Three examples: process 1 holds one of them and pads with a copy.
    common = ["inpaint", "--checkpoint", tmp_path / "ckpt", "--name", "m", "--data", "synthetic",
              "--data-arg", "size=(32,32)", "--index", "4", "--index", "0", "--index", "2",
              "--mask", "rect:8,8,12,12", "--steps", "8", "--gif",
              "--frames", "2", "--quiet"]
    jobs = {name: launch("synthesize.py", *common, "--output", tmp_path / name, **where)
            for name, where in (("two_processes", dict(processes=2)),
                                ("two_devices", dict(devices=2)), ("one_device", {}),
                                ("eight_devices", dict(devices=8)))}
    outputs = {name: finished(runs) for name, runs in jobs.items()}
    assert "m: PSNR" in outputs["two_processes"][0] and "PSNR" not in outputs["two_processes"][1]
    # The same per-device batches: the very same bytes.
    assert_same_files(tmp_path / "two_devices", tmp_path / "two_processes")
    # 1, 2 or 8 rows per device: XLA blocks the matmuls differently, so the float metrics
    # differ in the 7th digit; every picture is the same.
    reference = files(tmp_path / "one_device")
    assert len([name for name in reference if name.startswith("raw/")]) == 3 * 6
    for name in ("two_devices", "eight_devices"):
        other = files(tmp_path / name)
        assert sorted(other) == sorted(reference)
        assert [f for f in reference if f != "metrics.json" and other[f] != reference[f]] == []
        assert_close(json.loads(reference["metrics.json"]), json.loads(other["metrics.json"]))


def assert_close(a, b):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            assert_close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    else:
        assert a == b


@pytest.mark.slow
def test_an_input_error_on_one_process_stops_both_with_one_line(tmp_path):
    model = models.build("fcn_resnet14_w8", num_classes=7)
    models.save(tmp_path / "ckpt", model, models.init(model, jax.random.key(0)))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "good.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "label.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")  # process 1's example
    runs = launch("synthesize.py", "generate", "--checkpoint", tmp_path / "ckpt",
                  "--image", tmp_path / "good.png", "--label", tmp_path / "label.png",
                  "--image", tmp_path / "bad.png", "--label", tmp_path / "label.png",
                  "--output", tmp_path / "out", processes=2)
    for index, run in enumerate(runs):
        out, _ = run.communicate(timeout=300)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert run.returncode == 2 and len(errors) == 1, out[-2000:]
        assert "bad.png" in errors[0] and (index == 1 or "process 1:" in errors[0])
    assert not (tmp_path / "out").exists()

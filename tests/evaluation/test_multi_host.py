"""evaluate.py split over processes and devices writes the same bytes as one process: each
process reads its shard of the split, process 0 writes the gathered results."""

import jax
import pytest

from jaxseg import models
from tests.helpers.multiprocess import assert_same_files, finished, launch

# PGD, red-eps APGD (SEA's member attack) and the per-image worst case over them
ATTACKS = ["--attack", "pgd", "--attack", "apgd_red", "--steps", "3", "--eps", "8/255",
           "--worst-case", "--quiet"]


@pytest.mark.slow
def test_two_processes_and_eight_devices_write_the_same_files(tmp_path):
    model = models.build("fcn_resnet14_w8", num_classes=7)
    models.save(tmp_path / "ckpt", model, models.init(model, jax.random.key(0)))
    common = ["--checkpoint", tmp_path / "ckpt", "--name", "m", "--data", "synthetic",
              "--data-arg", "size=(32,32)", "--num-images", "7", "--batch-size", "8", *ATTACKS]
    jobs = {
        "two_processes": launch("evaluate.py", *common, "--output", tmp_path / "two_processes",
                                processes=2),
        "two_devices": launch("evaluate.py", *common, "--output", tmp_path / "two_devices",
                              devices=2),
        "one_device": launch("evaluate.py", *common, "--output", tmp_path / "one_device"),
        "eight_devices": launch("evaluate.py", *common, "--output", tmp_path / "eight_devices",
                                devices=8),
    }
    outputs = {name: finished(runs) for name, runs in jobs.items()}
    assert "distributed: 2 processes, 1 local and 2 global devices" in outputs["two_processes"][0]
    assert "m pgd:" in outputs["two_processes"][0] and "m pgd:" not in outputs["two_processes"][1]
    # Same global batches, same per-device batches: the very same bytes.
    assert_same_files(tmp_path / "two_devices", tmp_path / "two_processes")
    # Sign steps do not feel the per-device matmul blocking: the same counts on 1 and 8 devices
    # (a batch draws its attack's random start as a whole: keep the batch size to compare).
    assert_same_files(tmp_path / "one_device", tmp_path / "two_devices")
    assert_same_files(tmp_path / "one_device", tmp_path / "eight_devices")

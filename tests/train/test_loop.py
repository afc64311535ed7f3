"""Training: steps on fake data, NaN guard, device / process parallelism, bad configuration
(kills, resume and damaged checkpoints: test_faults.py)."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models
from jaxseg.cli import train as train_cli
from jaxseg.train import loop as trainer
from jaxseg.train import optim
from jaxseg.train import state as training
from tests.helpers import multiprocess, paths, train_worker
from tests.helpers.cli import one_line_error, run_cli

REPO = str(paths.REPO)
WORKER = os.path.join(REPO, "tests", "helpers", "train_worker.py")


def fake_batch(seed=0, n=4, size=32, classes=5):
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3), np.float32)
    labels = rng.integers(0, classes, (n, size, size)).astype(np.int32)
    labels[:, :4] = 255
    return images, labels


@pytest.fixture(scope="module")
def tiny():
    model = models.build("fcn_resnet14_w8", num_classes=5)
    return model, models.init(model, jax.random.key(0), (32, 32))


def one_step(tiny, mode, images, labels):
    model, variables = tiny
    config = train_worker.tiny_config()
    config.adv.mode = mode
    config.adv.steps = 2
    config.adv.replays = 2
    tx = optim.make_optimizer(config.optim, 10)
    state = training.create_state(variables, tx, jax.random.key(1),
                                  images.shape if mode == "free" else None)
    step = jax.jit(training.make_train_step(model, tx, config))
    return state, step(state, images, labels)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "pgd", "fgsm_rs", "free"])
def test_one_step_updates_parameters(tiny, mode):
    images, labels = fake_batch()
    before, (after, metrics) = one_step(tiny, mode, images, labels)
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    assert int(after.step) == (2 if mode == "free" else 1)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), before.params, after.params)
    assert min(jax.tree_util.tree_leaves(moved)) > 0  # every parameter tensor learned something
    if mode == "free":
        assert 0 < float(jnp.abs(after.free_delta).max()) <= 8 / 255 + 1e-6


@pytest.mark.slow
def test_adversarial_batch_has_higher_loss_than_clean(tiny):
    # Same parameters, same dropout key: the PGD batch must be harder than the clean one.
    images, labels = fake_batch(1)
    _, (_, clean) = one_step(tiny, "none", images, labels)
    _, (_, adversarial) = one_step(tiny, "pgd", images, labels)
    assert float(adversarial["loss"]) > float(clean["loss"])


@pytest.mark.slow
def test_non_finite_loss_leaves_the_state_unchanged_and_stops_the_loop(tiny):
    images, labels = fake_batch(2)
    images[0, 0, 0, 0] = np.nan
    before, (after, metrics) = one_step(tiny, "none", images, labels)
    assert not bool(metrics["finite"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, before.params, after.params)
    with pytest.raises(trainer.NonFiniteStep, match="loss is nan at step 7"):
        trainer._check_and_log([{"finite": True, "loss": 1.0, "pixel_acc": 0.5}, metrics], 7,
                               None, None)


def run_worker(workdir, output, *args, devices=1, environ=None, **popen):
    env = dict(os.environ, XLA_FLAGS=multiprocess.xla_flags(devices),
               PYTHONPATH=REPO, **(environ or {}))
    return subprocess.Popen([sys.executable, WORKER, str(workdir), str(output), *map(str, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def finished(process, timeout=300):
    return multiprocess.finished([process], timeout)[0]


def assert_same_params(a, b, atol):
    a, b = np.load(a), np.load(b)
    assert set(a.files) == set(b.files)
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=0, err_msg=name)


@pytest.mark.slow
def test_one_device_and_eight_devices_train_alike(tmp_path):
    # Adversarial mode: the attack and the step both run sharded over 8 devices.
    runs = [run_worker(tmp_path / f"w{n}", tmp_path / f"p{n}.npz", "pgd", devices=n) for n in (1, 8)]
    for run in runs:
        finished(run)
    assert_same_params(tmp_path / "p1.npz", tmp_path / "p8.npz", atol=1e-5)


@pytest.mark.slow
def test_two_processes_train_alike(tmp_path):
    """Each process holds one CPU device and half of every global batch. A simulated `srun -n 2`
    (SLURM's variables, one node), which the processes must join by themselves (--distributed
    auto). (Explicit --coordinator / --num-processes / --process-id: the evaluate.py and
    synthesize.py multi-process tests.)"""
    job = slurm_job_id_with_a_free_port()
    runs = [run_worker(tmp_path / "w", tmp_path / f"proc{i}.npz", "none", environ=dict(
        SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
        SLURM_PROCID=str(i), SLURM_LOCALID=str(i))) for i in range(2)]
    single = run_worker(tmp_path / "single", tmp_path / "single.npz", "none", devices=2)
    outputs = multiprocess.finished([*runs, single], timeout=300)
    assert_same_params(tmp_path / "proc0.npz", tmp_path / "proc1.npz", atol=0)
    assert_same_params(tmp_path / "proc0.npz", tmp_path / "single.npz", atol=1e-5)
    started = "distributed: 2 processes, 1 local and 2 global devices, mesh ('data': 2) [SLURM]"
    assert started in outputs[0] and started not in outputs[1]  # one line, from process 0
    metrics = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics if '"train"' in m] == [1, 2]  # one job


def slurm_job_id_with_a_free_port():
    """JAX's SLURM support derives the coordinator port from the job id."""
    for job in range(1000, 1000 + 4096, 97):
        port = job % 2**12 + (65535 - 2**12 + 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return job
    pytest.skip("no free port in JAX's SLURM range")


@pytest.mark.parametrize("override, message", [
    ("--config.adv.eps=-0.1", "eps must be >= 0"),
    ("--config.adv.attack=pgdd", "unknown adv.attack 'pgdd'"),
    ("--config.data.train=camvid:/nonexistent/camvid", "/nonexistent/camvid"),  # camvid config
    ("--config.model.num_classes=3", "model.num_classes=3 but the data has"),
    ("--config.nosuch=1", "unknown config key 'nosuch'"),
])
def test_bad_configuration_is_one_line_and_exit_code_2(tmp_path, capsys, override, message):
    config = "camvid_standard.py" if "camvid" in override else "demo.py"
    code = run_cli(train_cli.main, "--config", os.path.join(REPO, "configs", config),
                   "--workdir", tmp_path / "w", override)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "w").exists()  # a new workdir: nothing left behind


def test_a_failed_start_in_an_existing_workdir_keeps_it(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = run_cli(train_cli.main, "--config", os.path.join(REPO, "configs", "demo.py"),
                   "--workdir", tmp_path, "--config.model.num_classes=3")
    assert code == 2 and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_batch_not_divisible_by_the_devices_is_one_line_before_compiling(tmp_path):
    env = dict(os.environ, XLA_FLAGS=multiprocess.xla_flags(3))
    result = subprocess.run([sys.executable, "train.py", "--config", "configs/quick.py",
                             "--workdir", str(tmp_path / "w"), "--config.batch_size=4"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: batch_size 4 is not divisible by the 3 devices"], lines


@pytest.mark.slow
def test_init_checkpoint_with_other_classes_is_refused(tmp_path, capsys):
    model = models.build("fcn_resnet26_w16", num_classes=3)
    models.save(tmp_path / "ckpt", model, models.init(model, jax.random.key(0)))
    code = run_cli(train_cli.main, "--config", os.path.join(REPO, "configs", "demo.py"),
                   "--workdir", tmp_path / "w", f"--config.model.init={tmp_path / 'ckpt'}")
    one_line_error(capsys, code, "model has 3 classes, the data has 7")


@pytest.mark.slow
def test_prediction_grid_has_a_row_per_image_and_columns_per_attack(tiny, tmp_path):
    from PIL import Image

    from jaxseg import attacks, data
    from jaxseg import viz as visualize

    model, variables = tiny
    images, labels = fake_batch(3, n=2)
    info = data.DatasetInfo("fake", tuple("abcde"), data.default_palette(5))
    path = tmp_path / "grid.png"
    visualize.save_predictions(path, model, variables, images, labels, info,
                               {"clean": None, "fgsm": attacks.make("fgsm")})
    width, height = Image.open(path).size
    # image | truth | pred clean | fgsm image | pred fgsm, 2 px gaps, a 14 px title row
    assert (width, height) == (5 * 32 + 4 * 2, visualize.TITLE_HEIGHT + 2 * 32 + 2)


@pytest.mark.slow
def test_the_final_evaluation_says_what_it_runs_and_a_rerun_does_nothing(tmp_path, capsys):
    argv = ("--config", os.path.join(REPO, "configs", "quick.py"), "--workdir", tmp_path,
            "--config.eval.attack=pgd", "--config.eval.steps=1", "--config.eval.num_images=4",
            "--config.eval.batch_size=4")
    assert run_cli(train_cli.main, *argv) == 0
    err = capsys.readouterr().err
    assert "final evaluation at step 2: clean, pgd (eps 0.03137, 1 steps) on 4 images of " \
           "synthetic (val)" in err
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for kind in ("eval_clean", "eval_pgd"):
        record = next(r for r in records if r["kind"] == kind)
        name = kind[len("eval_"):]
        assert (f"  {name}: pixel accuracy {100 * record['pixel_acc']:.1f} %, mIoU "
                f"{100 * record['miou']:.1f} %") in err
    assert f"written to {tmp_path / 'metrics.jsonl'} (kinds eval_clean, eval_pgd)" in err

    # Ctrl-C during the final evaluation: the run is finished, so the signal thread's line
    # points at evaluate.py, not at a rerun (which would do nothing); before it, at a rerun.
    messages = []
    real_evaluate = trainer._evaluate

    class Watched(trainer.StopSignals):
        def __enter__(self):
            messages.append(self)
            return super().__enter__()

    def evaluate(*args, announce, **kwargs):
        messages.append(messages[0].at_once_message("SIGINT"))
        return real_evaluate(*args, announce=announce, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "StopSignals", Watched)
        patch.setattr(trainer, "_evaluate", evaluate)
        assert run_cli(train_cli.main, *argv[:3], str(tmp_path / "again"), *argv[4:]) == 0
    assert messages[1:] == [f"SIGINT: stopped at once during the final evaluation; the run is "
                            f"finished and saved: evaluate.py --checkpoint {tmp_path / 'again'}"
                            " measures it"]
    assert "rerun the same command to resume" in trainer.StopSignals().at_once_message("SIGINT")
    capsys.readouterr()

    # Rerun: finished with this very configuration, so nothing is built, compiled or logged.
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "_model_and_variables",
                      lambda *_: pytest.fail("a finished run built its model"))
        assert run_cli(train_cli.main, *argv) == 0
    captured = capsys.readouterr()
    assert f"{tmp_path}: already trained to step 2 with this configuration; nothing to do" \
        in captured.err
    assert f"trained fcn_resnet14_w8 to step 2: {tmp_path}" in captured.out
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    # A changed setting takes the resuming path, which names it (and has no step left to run).
    assert run_cli(train_cli.main, *argv, "--config.eval.num_images=2") == 0
    err = capsys.readouterr().err
    assert "already trained" not in err and "changed settings: eval.num_images: 4 -> 2" in err


def test_tensorboard_logging_does_not_import_pytorch():
    """tensorboardX imports PyTorch where it is installed (seconds per training process) only
    to accept its tensors; the trainer imports it without."""
    pytest.importorskip("tensorboardX")
    code = ("import sys\nfrom jaxseg.train.loop import _tensorboard_writer\n"
            "writer = _tensorboard_writer()\n"
            "print(writer.__name__, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=paths.REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["SummaryWriter", "False"], out.stderr[-2000:]

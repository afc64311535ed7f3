"""Faults lose nothing: a failing step, a damaged checkpoint, a second trainer, a changed
configuration, Ctrl-C at start-up, kills at random points; bad workdirs are one line."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import JaxsegError, models
from jaxseg.cli import evaluate as evaluate_cli
from jaxseg.cli import train as train_cli
from jaxseg.train import train
from jaxseg.train import workdir as workdirs
from jaxseg.train.checkpoint import TrainCheckpoints
from tests.helpers import paths, train_worker
from tests.helpers.cli import one_line_error, run_cli

REPO = str(paths.REPO)
QUICK = os.path.join(REPO, "configs", "quick.py")


def train_records(workdir):
    records = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            continue
    return [r["step"] for r in records if r["kind"] == "train"]


def steps_on_disk(workdir):
    return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


# --- errors inside the loop ------------------------------------------------------------------

@pytest.mark.slow
def test_an_error_mid_run_names_a_checkpoint_that_exists(tmp_path, capsys):
    # lr 1e30: step 1 is finite, step 2's loss is NaN while step 1's async save is in flight.
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path, "--config.steps=5",
                   "--config.optim.lr=1e30", "--config.checkpoint.every=1")
    line = one_line_error(capsys, code, "loss is nan at step 2")
    named = line.split("the last good checkpoint is ")[1]
    assert os.path.isdir(named) and named.endswith("checkpoints/1")
    assert os.listdir(tmp_path / "checkpoints") == ["1"]  # finished, no orbax tmp folder left
    models.load(named)  # loads, finite


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # lr 1e39
def test_a_non_finite_update_is_never_saved(tmp_path, capsys):
    # lr 1e39 (inf in float32): the loss of step 1 is finite, every updated parameter is not.
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path, "--config.steps=5",
                   "--config.optim.lr=1e39", "--config.checkpoint.every=1")
    one_line_error(capsys, code, "the update made parameters non-finite")
    assert TrainCheckpoints(tmp_path / "checkpoints", None).latest_step() is None


@pytest.mark.slow
def test_load_and_evaluate_refuse_non_finite_parameters(tmp_path, capsys):
    model = models.build("fcn_resnet14_w8", num_classes=7)
    variables = models.init(model, jax.random.key(0), (32, 32))
    variables["params"]["classifier"]["out"]["bias"] = jnp.full((7,), jnp.nan)
    models.save(tmp_path / "nan", model, variables)
    with pytest.raises(JaxsegError, match="non-finite"):
        models.load(tmp_path / "nan")
    code = run_cli(evaluate_cli.main, "--checkpoint", tmp_path / "nan", "--output", tmp_path / "o")
    one_line_error(capsys, code, "non-finite (NaN or inf) parameters")
    assert not (tmp_path / "o").exists()


# --- damaged checkpoints -----------------------------------------------------------------------

def damage(step_dir, kind):
    if kind == "truncated arrays":
        for root, _, files in os.walk(step_dir):
            for name in files:
                if os.path.basename(root) == "d":  # array data files of the OCDBT store
                    os.truncate(os.path.join(root, name), 10)
    elif kind == "no train item":
        shutil.rmtree(step_dir / "train")
    elif kind == "no data item":
        shutil.rmtree(step_dir / "data")
    elif kind == "corrupt metadata":
        (step_dir / "train" / "_METADATA").write_text("garbage")
        (step_dir / "_CHECKPOINT_METADATA").write_text("garbage")
    elif kind == "empty folder":
        shutil.rmtree(step_dir)
        step_dir.mkdir()


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
    """A workdir with checkpoints at steps 1, 2, 3."""
    workdir = tmp_path_factory.mktemp("three") / "w"
    config = train_worker.tiny_config(steps=3)
    config.checkpoint.every = 1
    train(config, str(workdir))
    return workdir


def restore_targets(config):
    """The (variables, train items) a run of `config` restores into, built without compiling a
    step (as the loop builds them)."""
    from jaxseg.train import loop, optim
    from jaxseg.train import state as training

    model = models.build(config.model.arch, 7, config.model.aux)
    variables = models.init(model, jax.random.key(config.seed), tuple(config.data.crop_size))
    tx = optim.make_optimizer(config.optim, config.steps)
    state = training.create_state(variables, tx, jax.random.key(config.seed))
    return model, state.variables, loop._train_items(state)


# orbax/TensorStore reading a truncated array file: its asyncio callback fires after the loop
# closed ("Event loop is closed", unraisable); jaxseg's own report is one line. Upstream noise,
# reported by whichever test of this module runs when it is collected (with Python 3.12 a later
# one), so the whole module filters it.
# One worker runs this file (make test: --dist loadgroup), so its module fixture is built once.
pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.xdist_group("test_faults")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated arrays", "no train item", "no data item",
                                  "corrupt metadata", "empty folder"])
def test_a_damaged_latest_checkpoint_is_set_aside_for_the_newest_intact_one(three_steps, tmp_path,
                                                                            capsys, kind):
    workdir = tmp_path / "w"
    shutil.copytree(three_steps, workdir)
    damage(workdir / "checkpoints" / "3", kind)
    config = train_worker.tiny_config(steps=3)
    config.checkpoint.every = 1
    model, variables, items = restore_targets(config)
    checkpoints = TrainCheckpoints(workdir / "checkpoints", model)
    step, *_, changes = checkpoints.restore_latest(variables, items, config.to_dict())
    checkpoints.close()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warnings) == 1 and "checkpoints/3 is damaged" in warnings[0], warnings
    assert (step, changes) == (2, [])
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3.damaged"]  # kept aside


@pytest.mark.slow
def test_training_resumes_past_a_damaged_checkpoint_with_one_record_per_step(three_steps,
                                                                             tmp_path, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(three_steps, workdir)
    damage(workdir / "checkpoints" / "3", "truncated arrays")
    config = train_worker.tiny_config(steps=4)
    config.checkpoint.every = 1
    result = train(config, str(workdir))
    assert "checkpoints/3 is damaged" in capsys.readouterr().err
    assert result["step"] == 4 and (workdir / "checkpoints" / "3.damaged").is_dir()
    assert 4 in steps_on_disk(workdir)
    assert train_records(workdir) == [1, 2, 3, 4]  # step 3 logged again by the resumed run: once


@pytest.mark.slow
def test_no_intact_checkpoint_is_one_line(three_steps, tmp_path, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(three_steps, workdir)
    for step in (1, 2, 3):
        damage(workdir / "checkpoints" / str(step), "empty folder")
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", workdir, "--config.steps=4")
    one_line_error(capsys, code, "no intact checkpoint")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1.damaged", "2.damaged", "3.damaged"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, message", [
    ("truncated arrays", "damaged checkpoint, its variables item is missing or corrupt"),
    ("empty folder", "not a jaxseg checkpoint"),
])
def test_evaluate_and_port_on_a_damaged_checkpoint(three_steps, tmp_path, capsys, kind, message):
    step = tmp_path / "step"
    shutil.copytree(three_steps / "checkpoints" / "3", step)
    damage(step, kind)
    code = run_cli(evaluate_cli.main, "--checkpoint", step, "--output", tmp_path / "o")
    assert str(step) in one_line_error(capsys, code, message)
    from jaxseg.cli import port as port_cli
    code = run_cli(port_cli.main, "export", step, tmp_path / "m.pth")
    assert str(step) in one_line_error(capsys, code, message)
    assert not (tmp_path / "m.pth").exists()


# --- changed configuration, metrics, workdir --------------------------------------------------

@pytest.mark.slow
def test_resume_with_a_changed_model_stops_and_lists_the_keys(three_steps, tmp_path, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(three_steps, workdir)
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", workdir, "--config.steps=4",
                   "--config.model.arch=fcn_resnet26_w16")
    line = one_line_error(capsys, code, "cannot be resumed with this configuration")
    assert "model.arch: 'fcn_resnet14_w8' -> 'fcn_resnet26_w16'" in line and "steps: 3 -> 4" in line
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", workdir, "--config.steps=4",
                   "--config.adv.mode=free")
    assert "adv.mode: 'none' -> 'free'" in one_line_error(capsys, code, "cannot be resumed")
    assert steps_on_disk(workdir) == [1, 2, 3]  # nothing touched


@pytest.mark.slow
def test_resume_with_a_changed_learning_rate_is_printed_and_kept_in_the_history(three_steps,
                                                                                tmp_path, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(three_steps, workdir)
    config = train_worker.tiny_config(steps=4)
    config.optim.lr = 0.05
    train(config, str(workdir))
    err = capsys.readouterr().err
    line = [line for line in err.splitlines() if line.startswith("resuming step 3")][0]
    assert "optim.lr: 0.02 -> 0.05" in line and "steps: 3 -> 4" in line
    history = [json.loads(line) for line in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert [h["start_step"] for h in history] == [0, 3]
    assert history[0]["config"]["optim"]["lr"] == 0.02 and history[1]["config"]["optim"]["lr"] == 0.05
    assert json.loads((workdir / "config.json").read_text())["optim"]["lr"] == 0.05


def test_trim_metrics_keeps_one_record_per_step(tmp_path):
    records = [{"step": s, "kind": "train"} for s in (1, 2, 3, 4)] + [{"step": 2, "kind": "eval_clean"}]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "ki'  # cut by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    workdirs.trim_metrics(str(tmp_path), 2)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [records[0], records[1], records[4]]


def read_only_dir(tmp_path):
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir(mode=0o555)
        return path / "w"
    return "/sys/jaxseg-test-workdir"  # root writes through permissions; sysfs refuses mkdir


@pytest.mark.parametrize("case, message", [
    ("file", "is a file, not a directory"),
    ("empty", "workdir must not be empty"),
    ("read-only", "cannot be written"),
])
def test_bad_workdir_is_one_line(tmp_path, capsys, case, message):
    workdir = {"file": tmp_path / "f", "empty": "", "read-only": read_only_dir(tmp_path)}[case]
    (tmp_path / "f").write_text("x")
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", workdir)
    one_line_error(capsys, code, message)
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("name", ["train.lock", "config_history.jsonl", "metrics.jsonl"])
def test_a_directory_where_the_trainer_keeps_a_file_is_one_line(tmp_path, capsys, name):
    (tmp_path / "w" / name).mkdir(parents=True)
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path / "w")
    one_line_error(capsys, code, f"{tmp_path / 'w' / name} is not a file")
    assert sorted(os.listdir(tmp_path / "w")) == [name]  # nothing written


def test_a_dataset_error_from_data_kwargs_names_the_config_key(tmp_path, capsys):
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path / "w",
                   "--config.data.kwargs.size=(0,0)")
    one_line_error(capsys, code, "synthetic (train): synthetic scene size 0x0 is too small")
    code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path / "w",
                   "--config.data.kwargs.size=(0,0)")
    assert "(from config key data.kwargs: " in one_line_error(capsys, code, "size=(0, 0))")


def test_a_second_trainer_on_a_workdir_is_refused(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom jaxseg.train import workdir\n"
         "with workdir.lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n",
         str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = run_cli(train_cli.main, "--config", QUICK, "--workdir", tmp_path)
        one_line_error(capsys, code, f"is in use by another trainer (pid {holder.pid})")
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    with workdirs.lock(str(tmp_path)):
        pass


# --- signals -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path):
    for delay in (0.3, 2.0, 5.0):
        workdir = tmp_path / f"w{delay}"
        process = subprocess.Popen([sys.executable, "train.py", "--config", QUICK, "--workdir",
                                    str(workdir), "--config.steps=1000"], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130 and "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        if "stopped by SIGINT" in err:  # start-up was over: the loop saved and stopped
            assert "rerun the same command to resume" in err, err
        elif "stopped at once" in last:  # in the loop, the first step compiling: nothing to save
            assert "rerun the same command to resume" in last, err
        else:
            assert last == "interrupted", err
        if (workdir / "config.json").exists():
            json.loads((workdir / "config.json").read_text())  # whole, never half-written


def _wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_in_the_loop_exits_at_once_with_nothing_to_save_or_when_pressed_twice(tmp_path):
    """Inside the loop a signal means "save, then stop" after the current step; when nothing
    has run since the last checkpoint (here: the first step compiling) or at a second Ctrl-C
    (here: during an evaluation that compiles), the run exits within 2 s instead, saving
    nothing half-way. The programs are unrolled 20-step attacks: seconds of compilation."""
    env = dict(os.environ, JAXSEG_UNROLL="on")
    slow = ["--config.adv.mode=pgd", "--config.adv.steps=20"]
    command = [sys.executable, "train.py", "--config", QUICK, "--config.steps=3"]

    first = tmp_path / "first_step"
    process = subprocess.Popen([*command, "--workdir", str(first), *slow], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (first / "config.json").exists(), process)  # the loop starts next
    time.sleep(1.0)  # the first step compiling
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0, err
    assert process.returncode == 130 and "SIGINT: stopped at once" in err, err
    assert not list((first / "checkpoints").glob("[0-9]*")), err

    twice = tmp_path / "twice"
    process = subprocess.Popen(
        [*command, "--workdir", str(twice), "--config.eval.every=1", "--config.eval.attack=pgd",
         "--config.eval.steps=20", "--config.eval.num_images=2"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = twice / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and '"train"' in metrics.read_text(), process)
    process.send_signal(signal.SIGINT)  # step 1 ran: it waits to save after the evaluation
    time.sleep(0.5)
    assert process.poll() is None
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0, err
    assert "stopping after the current step" in err and "SIGINT: stopped at once" in err, err
    assert process.returncode == 130 and "Traceback" not in err, err


LONG_COMPILE = """
import functools, sys
from jaxseg.cli import start_process
start_process()
import jax, jax.numpy as jnp
chain = jax.jit(lambda x: functools.reduce(lambda a, i: jnp.sin(a @ a + i), range(3000), x))
print("compiling", flush=True)
chain.lower(jnp.ones((32, 32))).compile()  # tens of seconds inside XLA, away from Python
print("compiled", flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_during_a_long_compilation_exits_at_once():
    """Python runs its signal handler only when the main thread is back in Python; XLA compiles
    for tens of seconds (this program: ~30 s), so the commands' signal thread acts instead."""
    process = subprocess.Popen([sys.executable, "-c", LONG_COMPILE], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "compiling"
    time.sleep(1.0)  # inside the compilation
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=10)  # a quarter of the compilation, at most
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("Ctrl-C waited for the compilation to end")
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert "compiled" not in out


@pytest.mark.slow
def test_sigterm_and_kills_at_random_points_lose_nothing(tmp_path):
    """A SIGTERM (save, stop, exit 75: not finished), then SIGKILLs at random moments across several save
    cycles (some in the second after a save, while it is still in flight); the resumed run must
    reach the parameters of an uninterrupted run bit for bit, and metrics.jsonl must hold one
    record per step."""
    steps = 40
    config = train_worker.tiny_config(steps=steps)
    config.checkpoint.every = 5
    config_path = tmp_path / "config.py"
    config_path.write_text(
        "import json, ml_collections\n"
        f"def get_config():\n    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    command = [sys.executable, "train.py", "--config", str(config_path), "--workdir"]
    # Five starts of one program: compile it once (JAX's persistent cache), kill the rest.
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    straight = subprocess.run(command + [str(tmp_path / "straight")], cwd=REPO, env=env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "straight" / "tensorboard"))

    rng = random.Random(0)
    workdir = tmp_path / "interrupted"
    targets = sorted(rng.sample(range(3, steps - 3), 3))  # interrupt once this many are logged
    signals = [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]
    sent = []
    for target, sig in zip(targets, signals):
        process = subprocess.Popen(command + [str(workdir)], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while process.poll() is None:
            if (workdir / "metrics.jsonl").exists() and len(train_records(workdir)) >= target:
                time.sleep(rng.uniform(0.0, 0.05))
                process.send_signal(sig)
                sent.append(sig)
                break
            time.sleep(0.002)
        _, err = process.communicate(timeout=120)
        if sent and sent[-1] == signal.SIGTERM == sig:
            assert process.returncode == 75, err
            assert re.search(rf"stopped by SIGTERM at step \d+ of {steps}; checkpoint saved in "
                             rf"{re.escape(str(workdir))}; rerun the same command to resume", err)
    final = subprocess.run(command + [str(workdir)], cwd=REPO, env=env, capture_output=True,
                           text=True)
    assert final.returncode == 0, final.stderr
    assert sent.count(signal.SIGKILL) >= 2 and signal.SIGTERM in sent
    _, a = models.load(workdir)
    _, b = models.load(tmp_path / "straight")
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert train_records(workdir) == list(range(1, steps + 1))


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    """A file-size limit stands in for a full disk: orbax's asynchronous save fails in the
    background and reports it (often as a ValueError) at the next save; the run stops with one
    line naming the last good checkpoint, its last line, and no temporary checkpoint folder stays
    behind, and nothing else is printed (tensorstore's callbacks raise 'Event loop is closed'
    once per array as the failed save unwinds: hundreds of tracebacks unless kept quiet)."""
    limited = ("import resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
               "from jaxseg.cli.train import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    workdir = tmp_path / "w"
    workdir.mkdir()  # a user's (a new one, with no checkpoint saved, is removed on the error)
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    result = subprocess.run([sys.executable, "-c", limited, "--config", QUICK, "--workdir",
                             str(workdir), "--config.steps=4", "--config.checkpoint.every=2"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "is the disk full?" in errors[0] and "the last good checkpoint is" in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-2000:]
    assert "warning:" not in result.stderr and "ERROR:" not in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    left = os.listdir(workdir / "checkpoints")
    assert not [name for name in left if "tmp" in name], left

"""Multi-process start-up, the one path of every CLI: a job found in the environment is joined
(or the run stops); independent copies never run side by side. (A simulated `srun -n 2` that
trains one job: tests/train/test_loop.py::test_two_processes_train_alike.)"""

import os
import subprocess
import sys

import pytest

from jaxseg import runtime
from jaxseg.cli import evaluate as evaluate_cli
from jaxseg.cli import train as train_cli
from tests.helpers import paths
from tests.helpers.cli import one_line_error, run_cli

REPO = str(paths.REPO)


@pytest.mark.parametrize("environ, found", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # a one-task SLURM job: single process
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, ("SLURM", 4)),
    ({"SLURM_NTASKS": "4"}, None),  # not inside a job
    ({"OMPI_COMM_WORLD_SIZE": "8"}, ("Open MPI", 8)),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, ("Cloud TPU", 4)),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1234"}, ("JAX_COORDINATOR_ADDRESS", None)),
])
def test_cluster_environment(environ, found):
    assert runtime.cluster_environment(environ) == found


def test_on_without_a_job_and_off_with_flags_are_refused(tmp_path, capsys, monkeypatch):
    for name in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                 "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    quick = ["--config", "configs/quick.py", "--workdir", tmp_path / "w"]
    one_line_error(capsys, run_cli(train_cli.main, *quick, "--distributed", "on"),
                   "refusing to run as a single process")
    one_line_error(capsys, run_cli(train_cli.main, *quick, "--distributed", "off",
                                   "--coordinator", "h:1"), "--distributed off contradicts")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("environ, launcher", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, "SLURM launched 2 processes"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI launched 4 processes"),
])
def test_off_inside_a_multi_process_launch_is_refused(tmp_path, capsys, monkeypatch, environ,
                                                     launcher):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    for main in (train_cli.main, evaluate_cli.main):
        args = ["--config", "configs/quick.py", "--workdir", tmp_path / "w"] \
            if main is train_cli.main else ["--checkpoint", tmp_path, "--output", tmp_path / "o"]
        line = one_line_error(capsys, run_cli(main, *args, "--distributed", "off"), launcher)
        assert "launch one process" in line
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_a_job_that_cannot_be_joined_stops_instead_of_running_alone(tmp_path):
    # SLURM says 2 tasks but gives no node list: JAX cannot find the coordinator.
    env = dict(os.environ, SLURM_JOB_ID="7", SLURM_NTASKS="2")
    result = subprocess.run([sys.executable, "train.py", "--config", "configs/quick.py",
                             "--workdir", str(tmp_path / "w")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "joining the multi-process job from SLURM failed" in lines[0]
    assert "stopping rather than running independent copies" in lines[0]
    assert not (tmp_path / "w").exists()


def test_cpu_compiler_options_are_accepted_by_xla():
    """The train step's XLA:CPU options compile (a misspelt option or value would raise)."""
    import jax
    import jax.numpy as jnp

    options = runtime.compiler_options()
    assert options == {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    square = jax.jit(lambda v: v * v, compiler_options=options)
    assert float(square(jnp.float32(3.0))) == 9.0
    once = runtime.compiler_options(run_once=True)  # the models' initialisers
    assert once == {**options, "xla_backend_optimization_level": 0}
    assert float(jax.jit(lambda v: v * v, compiler_options=once)(jnp.float32(5.0))) == 25.0
    with pytest.raises(Exception, match="xla_cpu_scheduler_type|CPU_SCHEDULER"):
        jax.jit(lambda v: v * v,
                compiler_options={"xla_cpu_scheduler_type": "NO_SUCH"})(jnp.float32(3.0))


def test_runtime_jit_compiles_with_the_backend_options_on_first_call(monkeypatch):
    """runtime.jit: jax.jit built on the first call with compiler_options(), static arguments
    and jax.jit's attributes passed through."""
    import functools

    import jax
    import jax.numpy as jnp

    asked = []
    monkeypatch.setattr(runtime.backend, "compiler_options",
                        lambda run_once=False: asked.append(run_once) or {
                            "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"})

    @functools.partial(runtime.jit, static_argnames=("power",))
    def scaled(x, power):
        return x ** power

    assert asked == [] and scaled.__name__ == "scaled"
    assert float(scaled(jnp.float32(3.0), power=2)) == 9.0
    assert float(scaled(jnp.float32(2.0), power=3)) == 8.0
    assert asked == [False] and scaled._cache_size() == 2
    once = runtime.jit(lambda x: x + 1, run_once=True)  # compiled with the run-once options
    assert float(once(jnp.float32(1.0))) == 2.0 and asked == [False, True]
    # inside a trace on constant arguments (jax.eval_shape of a closure, as plan.py does)
    constant = jnp.float32(3.0)  # made outside the trace: not a tracer
    assert jax.eval_shape(lambda: once(constant)).shape == ()
    assert float(jax.jit(lambda: scaled(constant, power=2))()) == 9.0
    assert float(scaled.lower(jnp.float32(1.0), power=2).compile()(jnp.float32(4.0))) == 16.0
    # inside an outer jit or grad (jax refuses compiler options on a nested jit)
    assert float(jax.jit(lambda x: scaled(x, power=2) + 1)(jnp.float32(3.0))) == 10.0
    assert float(jax.grad(lambda x: scaled(x, power=2))(jnp.float32(3.0))) == 6.0


def test_jit_traces_again_under_another_backend_policy():
    """Models read the convolution policy while tracing; jax's trace cache does not know it, so
    runtime.jit keeps a program per policy: one traced under the default is never reused under
    conv_policy(...), outermost or nested."""
    import functools

    import jax
    import jax.numpy as jnp

    @functools.partial(runtime.jit)
    def policy_seen(x):
        return x + (1.0 if runtime.pointwise_matmul() else 2.0)

    def nested(x):  # a new outer function each time: only the inner program could be stale
        return jax.jit(lambda y: policy_seen(y))(x)

    default = 1.0 if runtime.pointwise_matmul() else 2.0  # CPU: 1x1 convolutions as matmuls
    assert float(policy_seen(jnp.float32(0.0))) == float(nested(jnp.float32(0.0))) == default
    with runtime.conv_policy(pointwise_matmul=default != 1.0):
        assert float(policy_seen(jnp.float32(0.0))) == 3.0 - default
        assert float(nested(jnp.float32(0.0))) == 3.0 - default
    assert float(policy_seen(jnp.float32(0.0))) == float(nested(jnp.float32(0.0))) == default


HEAP_PROBE = """
import resource, sys
import jax, jax.numpy as jnp
import jaxseg, jaxseg.models, jaxseg.attacks, jaxseg.train, jaxseg.evaluation, jaxseg.synthesis
from jaxseg import runtime

kept = runtime.keep_freed_memory() if sys.argv[1] == "opt-in" else None

def loss(w, x):
    for _ in range(3):
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return x.sum()

step = jax.jit(jax.grad(loss))  # XLA:CPU's temporary buffer: ~130 MB, beyond glibc's mmap threshold
w, x = jnp.full((1, 1, 32, 32), 0.01), jnp.ones((8, 128, 128, 32))  # 1x1: memory, few FLOPs
for _ in range(3):
    step(w, x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step(w, x).block_until_ready()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_memory_is_reused_between_executions_only_after_opting_in():
    """Importing jaxseg leaves the allocator alone: a program's temporary buffer is mapped
    afresh and faulted in page by page every execution (~33 000 pages here), as with glibc's
    defaults. After `runtime.keep_freed_memory()` (what the CLIs call; CPU-only host, glibc) it
    comes back from the heap; JAXSEG_CPU_HEAP=system declines. The kept heap still grows now
    and then by a buffer (another allocation took its place), so compare."""
    faults = {}
    for name, how, mode in (("imported", "import", "keep"), ("kept", "opt-in", "keep"),
                            ("declined", "opt-in", "system")):
        environ = dict(os.environ, JAXSEG_CPU_HEAP=mode, JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-c", HEAP_PROBE, how], capture_output=True,
                                text=True, cwd=REPO, env=environ, check=True)
        kept, count = result.stdout.split()
        assert kept == {"imported": "None", "kept": "True", "declined": "False"}[name]
        faults[name] = int(count)
    assert faults["imported"] > 20 * 20_000  # every execution maps its ~130 MB again
    assert faults["declined"] > 20 * 20_000
    assert faults["kept"] < min(faults["imported"], faults["declined"]) / 3


def test_the_commands_keep_freed_memory_and_importing_jaxseg_does_not(monkeypatch):
    """`start_process()`, which every command's __main__ calls, applies the heap policy;
    importing the command modules does not."""
    import jaxseg.cli
    from jaxseg.runtime import heap

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr("jaxseg.errors.exit_on_interrupt", lambda: None)
    import jaxseg.cli.evaluate, jaxseg.cli.prepare, jaxseg.cli.train  # noqa: E401,F401
    assert calls == []
    jaxseg.cli.start_process()
    assert calls == [1]
    for path in ["train.py", "evaluate.py", "synthesize.py", *sorted(
            str(p.relative_to(REPO)) for p in (paths.REPO / "jaxseg" / "cli").glob("*.py"))]:
        text = (paths.REPO / path).read_text()
        if "def main(" in text or path.endswith(("train.py", "evaluate.py", "synthesize.py")):
            main_block = text[text.rindex('if __name__ == "__main__":'):]
            assert "start_process()" in main_block, path


def test_freed_memory_policy_off_cpu(monkeypatch):
    """Never on a host whose JAX has an accelerator to run on."""
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert not runtime.cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert runtime.cpu_only()


SKEWED = """
import sys, time
import numpy as np
from jax.experimental import multihost_utils
from jaxseg import runtime
process, coordinator, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
runtime.initialize_distributed("on", coordinator, 2, process)
if process == 1:
    time.sleep(delay)  # a slow first compile, data loading, a busy host
print(multihost_utils.process_allgather(np.array([process])).ravel().tolist())
"""


@pytest.mark.slow
def test_processes_further_apart_than_gloos_30_seconds_still_meet():
    """Gloo fails a program's first collective if a process is over 30 s late; the start-up
    connects the processes at a barrier instead, after which they may drift apart."""
    from tests.helpers.multiprocess import finished, free_port

    coordinator = f"127.0.0.1:{free_port()}"
    start = lambda i: subprocess.Popen(  # noqa: E731
        [sys.executable, "-c", SKEWED, str(i), coordinator, "32"], cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    # Process 0 alone first: while it waits, it says for whom, where and how long.
    first = start(0)
    waiting = f"distributed: waiting up to 300 s for 2 processes to join at {coordinator} "
    seen = [first.stdout.readline()]
    while waiting not in seen[-1] and seen[-1]:
        seen.append(first.stdout.readline())
    assert waiting in seen[-1], seen
    runs = [first, start(1)]
    outputs = finished(runs, timeout=240)
    for output in outputs:
        assert output.strip().splitlines()[-1] == "[0, 1]", output
    assert waiting not in outputs[1], outputs[1]  # the others keep quiet

"""Backend policy in one place: the device mesh, multi-host start-up, and how loops compile.

Mesh: one 1-D `Mesh` with a 'data' axis; batches sharded over it, parameters replicated. Under
`jax.jit`, a batch placed with `batch_sharding(mesh)` and variables placed with
`replicated(mesh)` make XLA split every per-example computation over the devices (and reduce
across them where the program needs it, e.g. batch statistics). No `pmap`.

Loops: XLA:CPU runs a convolutional network about 4-5x slower per step inside a rolled while
loop than the same steps unrolled into straight-line code, while unrolling costs compile time
linear in the steps (figures: docs/performance.md). XLA:GPU/TPU run while loops natively, so
there unrolling only multiplies compile time. The policy, decided here and nowhere else:

    CPU      loops of up to UNROLL_LIMIT steps unroll; longer descents that can be split
             (synthesis) run as a host loop of unrolled chunks of at most UNROLL_LIMIT steps
    GPU/TPU  rolled, one program

The expert override is the environment variable JAXSEG_UNROLL=auto|on|off (or the
`loop_policy` context manager): on unrolls every loop, off rolls every loop. It is read when an
attack or a descent is configured, so set it before building one.

Compute dtype: 'auto' computes in bfloat16 on GPU/TPU (their matrix units run bf16 at several
times the fp32 rate) and in float32 on CPU (XLA:CPU has no fast bf16 convolutions); parameters,
logits and losses stay float32 either way. `model.dtype` / `--dtype float32|bfloat16` override.

Convolutions: on CPU, 1x1 convolutions run as matmuls over channels (XLA:CPU's convolution
path is slower for them, forward and backward); on GPU/TPU they stay lax convolutions (cuDNN /
the TPU's convolution units run them as matmuls anyway, and XLA:GPU in jaxlib 0.11.2 aborted
compiling the FCN-ResNet50 train step at 480x480 in a Triton GEMM fusion, "Check failed:
subdim_size_accumulator == dim_size (3600 vs. 120)": a 60x60 output flattened against the
120-pixel input of a stride-2 matmul 1x1 convolution). `conv_policy(pointwise_matmul=...)`
overrides it, for benchmarks; parameters and results are the same either way. Float32 3x3
convolutions of stride 1, dilated or not (all but one of ResNet's, the FCN heads), run as
Winograd F(2x2, 3x3) on CPU (`winograd_convs`): 16 batched matmuls instead of XLA:CPU's direct
convolution, forward and backward (the FCN head's -47 %, layer3's dilated ones -63 %; the train
step -28 % standard, -32 % AT); strided ones, bfloat16 and GPU/TPU stay lax convolutions.

Blocks and scheduling on CPU: each bottleneck block's output passes an optimization barrier
(`materialize_blocks`), so XLA:CPU computes it once instead of fusing the block's BN / residual
/ ReLU chain into several consumers in the backward pass (and recomputing it there, e.g. inside
the transposed copy that a 3x3 convolution's weight gradient reads), and jaxseg's programs
compile with the memory-optimised instruction scheduler (`compiler_options`; train steps in
`train.state.compile_step`, attacks, evaluation and synthesis through `runtime.jit`): together
-11 % on the FCN-ResNet50 train step, the scheduler -3 % on the PGD-10 attack
(docs/performance.md). GPU/TPU keep XLA's defaults (unmeasured there).

Host memory on a CPU-only host (glibc): importing this module makes malloc keep what the
process frees (`keep_freed_memory`), so that XLA:CPU's per-execution temporary buffer is reused
instead of mapped and faulted in anew every step; JAXSEG_CPU_HEAP=system opts out.
"""

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.errors import JaxsegError

DATA_AXIS = "data"
UNROLL_LIMIT = 32  # steps (x restarts) up to which CPU loops unroll
UNROLL_ENV = "JAXSEG_UNROLL"
LOOP_MODES = ("auto", "on", "off")
_override = []  # stack of loop_policy() modes


# ---------------------------------------------------------------------------------------------
# How programs are shaped and compiled per backend: convolutions, block barriers, XLA options

_conv_override = []  # stack of conv_policy() choices: {name: True / False / None (default)}


def _cpu_choice(name):
    """The innermost `conv_policy` choice for `name`, else whether the backend is XLA:CPU."""
    for choices in reversed(_conv_override):
        if choices[name] is not None:
            return choices[name]
    return jax.default_backend() == "cpu"


def pointwise_matmul():
    """Whether models built now write 1x1 convolutions as matmuls (read at trace time): on CPU
    unless `conv_policy` says otherwise."""
    return _cpu_choice("pointwise_matmul")


def materialize_blocks():
    """Whether models built now put an optimization barrier on each bottleneck block's output
    (read at trace time): on CPU unless `conv_policy` says otherwise."""
    return _cpu_choice("materialize_blocks")


def winograd_convs():
    """Whether models built now run float32 3x3 convolutions of stride 1 (any dilation) as
    Winograd F(2x2, 3x3) (`jaxseg.models.winograd`; read at trace time): on CPU unless
    `conv_policy` says otherwise."""
    return _cpu_choice("winograd_convs")


@contextlib.contextmanager
def conv_policy(pointwise_matmul=None, materialize_blocks=None, winograd_convs=None):
    """Within the block, models trace 1x1 convolutions as matmuls (True) or lax convolutions
    (False), barriers after blocks (True) or none (False), and 3x3 convolutions as Winograd's
    (True) or lax's (False); None keeps the backend's choice. For tests and benchmarks:
    parameters are the same either way, results equal to float32 rounding."""
    choices = dict(pointwise_matmul=pointwise_matmul, materialize_blocks=materialize_blocks,
                   winograd_convs=winograd_convs)
    _conv_override.append({k: None if v is None else bool(v) for k, v in choices.items()})
    try:
        yield
    finally:
        _conv_override.pop()


class jit:
    """`jax.jit` compiling with `compiler_options()` (use as `@functools.partial(runtime.jit,
    static_argnames=...)`). jax.jit is built on the first call, not at import: choosing the
    options asks for the backend, which must not start before `jax.distributed.initialize`.
    Called on traced arguments (inside an outer jit, grad or vmap) it is a plain jax.jit: jax
    takes compiler options only on the outermost program."""

    def __init__(self, fun, **jit_kwargs):
        functools.update_wrapper(self, fun)
        self._fun, self._jit_kwargs, self._jitted, self._nested = fun, jit_kwargs, None, None

    def _built(self):
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(),
                                   **self._jit_kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._jit_kwargs)
            return self._nested(*args, **kwargs)
        return self._built()(*args, **kwargs)

    def __getattr__(self, name):  # lower, trace, _cache_size, ...
        return getattr(self._built(), name)


def compiler_options():
    """XLA options for compiling jaxseg's programs on the default backend (`jax.jit(...,
    compiler_options=...)`; train steps, attacks, evaluation, synthesis): XLA:CPU's
    memory-optimised scheduler, which orders a program's thunks for less live memory and less
    concurrency (the default and the concurrency-optimised ones run independent convolutions
    side by side on the same few cores, and are slower on the train step and the attack);
    nothing on GPU/TPU."""
    if jax.default_backend() == "cpu":
        return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    return {}


# ---------------------------------------------------------------------------------------------
# Host memory on CPU

HEAP_ENV = "JAXSEG_CPU_HEAP"
HEAP_MODES = ("keep", "system")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt() parameters


def _cpu_only():
    """Whether JAX will run on the CPU alone, decided without starting a backend: JAX_PLATFORMS
    names only cpu, or no accelerator plugin (a PJRT plugin, libtpu) is installed."""
    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    names = {name.strip().lower() for name in platforms.split(",") if name.strip()}
    if names:
        return names <= {"cpu"}
    return not (importlib.metadata.entry_points(group="jax_plugins")
                or importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu"))


def keep_freed_memory():
    """On a CPU-only Linux host: glibc keeps memory the process frees for its next allocation
    instead of handing it back to the kernel. XLA:CPU allocates a program's temporary buffer
    afresh for every execution (1.2 GB for the FCN-ResNet50 train step at batch 4, from its
    worker threads); by default glibc maps it anew each time and the kernel faults it in page by
    page (about 330 000 faults, ~1 s of system time per step). With one malloc arena (a thread's
    own arena cannot hold such a buffer and would map it), no mmap and no trimming, the heap
    keeps it: the process stays at its peak memory, which the next step needs again anyway.
    Applied when jaxseg.runtime is imported, before XLA starts its threads (it must: threads
    pick their arena on their first allocation). JAXSEG_CPU_HEAP=system leaves glibc's
    defaults. Returns whether the options are in effect."""
    mode = os.environ.get(HEAP_ENV, "keep").strip().lower()
    if mode not in HEAP_MODES:
        warnings.warn(f"{HEAP_ENV}={mode!r} is not one of {', '.join(HEAP_MODES)}; leaving "
                      "glibc's malloc defaults", stacklevel=2)
        return False
    if mode == "system" or platform.libc_ver()[0] != "glibc" or not _cpu_only():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim
    return all(mallopt(option, value) == 1 for option, value in settings)


FREED_MEMORY_KEPT = keep_freed_memory()


# ---------------------------------------------------------------------------------------------
# Compute dtype

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def compute_dtype(name="auto"):
    """The models' compute dtype for `name` (see COMPUTE_DTYPES): None means float32."""
    if name not in COMPUTE_DTYPES:
        raise JaxsegError(f"compute dtype {name!r}; choose one of {', '.join(COMPUTE_DTYPES)}")
    if name == "auto":
        name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return None if name == "float32" else jnp.bfloat16


# ---------------------------------------------------------------------------------------------
# Loops


def loop_mode():
    """'auto', 'on' or 'off': the innermost `loop_policy`, else $JAXSEG_UNROLL, else 'auto'."""
    mode = _override[-1] if _override else os.environ.get(UNROLL_ENV, "auto").strip().lower()
    if mode not in LOOP_MODES:
        raise JaxsegError(f"{UNROLL_ENV}={mode!r}; choose one of {', '.join(LOOP_MODES)}")
    return mode


@contextlib.contextmanager
def loop_policy(mode):
    """Within the block, loops configured are unrolled ('on'), rolled ('off') or chosen per
    backend ('auto'). For tests and benchmarks; results do not depend on it."""
    if mode not in LOOP_MODES:
        raise JaxsegError(f"unknown loop mode {mode!r}; choose one of {', '.join(LOOP_MODES)}")
    _override.append(mode)
    try:
        yield
    finally:
        _override.pop()


def unroll(steps):
    """Whether a loop of `steps` iterations compiles unrolled."""
    mode = loop_mode()
    if mode != "auto":
        return mode == "on"
    return jax.default_backend() == "cpu" and steps <= UNROLL_LIMIT


def largest_divisor(n, at_most):
    """The largest divisor of n that is <= at_most (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def chunk(steps, divides=None):
    """Steps per compiled program when a long descent of `steps` should run as a host loop of
    unrolled programs (CPU, 'auto', more than UNROLL_LIMIT steps): the largest divisor of
    `divides` (default `steps`; a trajectory passes its steps per frame) up to UNROLL_LIMIT.
    None: one program."""
    if loop_mode() != "auto" or jax.default_backend() != "cpu" or steps <= UNROLL_LIMIT:
        return None
    return largest_divisor(steps if divides is None else divides, UNROLL_LIMIT)


# ---------------------------------------------------------------------------------------------
# Devices


def make_mesh(devices=None):
    """A 1-D mesh named 'data' over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise JaxsegError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh):
    """Leading (batch) axis split over 'data'; the other axes whole on each device."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh):
    """The whole array on every device (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def local_device_count(mesh):
    """Devices of this process in `mesh` (each process feeds that many batch shards)."""
    return len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])


def shard_batch(mesh, tree):
    """Place every array of `tree`, this process's rows of a batch (the whole batch in a
    one-process job), with the batch axis split over the mesh: process p's rows follow process
    p - 1's in the global batch (`jax.make_array_from_process_local_data`)."""
    local = local_device_count(mesh)
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.shape[0] % local:
            raise JaxsegError(f"batch size {leaf.shape[0]} is not divisible by the {local} "
                              "devices of the mesh" + (" in this process" if
                                                       jax.process_count() > 1 else ""))
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)


def all_rows(mesh, tree):
    """Every process's rows of host arrays (`tree`: this process's), in process order, as numpy
    on every process; in a one-process job the arrays themselves (in the dtypes a device would
    give them, e.g. int32 for int64 without x64), without a device round trip."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(
            x, jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)), tree)
    return jax.tree.map(to_host, shard_batch(mesh, tree))


def to_host(array):
    """A (possibly multi-process, sharded) array as one numpy array, whole, on every process."""
    if jax.process_count() > 1 and isinstance(array, jax.Array) \
            and not array.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def is_main_process():
    """Whether this process writes files and prints (process 0 of a multi-process job)."""
    return jax.process_index() == 0


def sum_over_processes(array):
    """The elementwise sum of a numpy array over the processes of the job (host-side)."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(np.asarray(array))).sum(axis=0)


def on_every_process(check):
    """`check()`, with its outcome agreed: if it raises a JaxsegError on any process, every
    process raises one (naming the process that failed), so that no process waits forever in
    a collective the others never join. Returns check()'s value."""
    try:
        value, message = check(), ""
    except JaxsegError as err:
        if jax.process_count() == 1:
            raise
        value, message = None, str(err)
    if jax.process_count() == 1:
        return value
    encoded = np.zeros(1024, np.uint8)
    raw = message.encode()[:1023]
    encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
    encoded[-1] = bool(message)
    everyone = np.asarray(multihost_utils.process_allgather(encoded))
    failed = [p for p in range(len(everyone)) if everyone[p, -1]]
    if not failed:
        return value
    if message:
        raise JaxsegError(message)
    first = everyone[failed[0], :-1]
    text = bytes(first[first > 0]).decode(errors="replace")
    raise JaxsegError(f"process {failed[0]}: {text}")


def place(tree, shardings):
    """`jax.device_put(tree, shardings)` for a value every process holds whole and alike (made
    from the same seed or loaded from the same file): each process copies its own shards. In a
    multi-process job device_put would first check that the processes agree, one collective
    per array (hundreds for a train state, slow and at the mercy of Gloo's 30 s timeouts)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree, shardings)


def replicate(mesh, tree):
    """Place every array of `tree` whole on every device of the mesh."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    # Every process holds the whole value (loaded or computed alike); no cross-host copy.
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: x if isinstance(x, jax.Array) and x.sharding == sharding
        else jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


DISTRIBUTED_MODES = ("auto", "on", "off")


def cluster_environment(environ=None):
    """(launcher, process count or None) of a multi-process launch found in the environment,
    or None: SLURM, Open MPI, Cloud TPU multi-host, or JAX_COORDINATOR_ADDRESS."""
    env = os.environ if environ is None else environ

    def count(name):
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    if "SLURM_JOB_ID" in env and max(count("SLURM_NTASKS"), count("SLURM_STEP_NUM_TASKS")) > 1:
        return "SLURM", max(count("SLURM_NTASKS"), count("SLURM_STEP_NUM_TASKS"))
    if count("OMPI_COMM_WORLD_SIZE") > 1:
        return "Open MPI", count("OMPI_COMM_WORLD_SIZE")
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return "Cloud TPU", len(hosts)
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS", count("JAX_NUM_PROCESSES") if "JAX_NUM_PROCESSES" in env else None
    return None


def initialize_distributed(mode="auto", coordinator=None, num_processes=None, process_id=None,
                           tool="this command", timeout=300):
    """The one start-up path of every CLI. mode 'auto': join a multi-process job when the
    environment shows one (`cluster_environment`) or flags are given; 'on': join one or stop;
    'off': never join, and stop if the environment shows a multi-process launch. A detected job
    that cannot be joined stops with one line: never do independent copies run side by side.
    On success process 0 prints one line: processes, local and global devices, the mesh."""
    if mode not in DISTRIBUTED_MODES:
        raise JaxsegError(f"--distributed {mode!r}; choose one of {', '.join(DISTRIBUTED_MODES)}")
    explicit = bool(coordinator) or num_processes is not None or process_id is not None
    found = cluster_environment()
    if mode == "off":
        if explicit:
            raise JaxsegError("--distributed off contradicts --coordinator / --num-processes / "
                              "--process-id")
        if found is not None:
            count = f"{found[1]} processes" if found[1] else "several processes"
            raise JaxsegError(f"--distributed off, but {found[0]} launched {count}: each would "
                              f"run {tool} alone on the same job; launch one process (e.g. srun "
                              "-n 1) or use --distributed auto")
        return
    launcher = "--coordinator / --num-processes / --process-id" if explicit else (found or ("",))[0]
    if not explicit and found is None:
        if mode == "on":
            raise JaxsegError("--distributed on: no multi-process job found (SLURM_NTASKS, "
                              "OMPI_COMM_WORLD_SIZE, TPU_WORKER_HOSTNAMES, JAX_COORDINATOR_ADDRESS)"
                              " and no --coordinator; refusing to run as a single process")
        return
    # CPU hosts (and tests) need a collectives backend across processes; GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator or None,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout)
    except Exception as err:  # jax raises many types; the run must stop, not go on alone
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise JaxsegError(f"joining the multi-process job from {launcher} failed ({reason}); "
                          "stopping rather than running independent copies") from None
    if mode == "on" and jax.process_count() == 1:
        raise JaxsegError(f"--distributed on: the job from {launcher} has one process only")
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        _connect_cpu_collectives(timeout)
    if jax.process_index() == 0:
        print(f"distributed: {jax.process_count()} processes, {jax.local_device_count()} local "
              f"and {jax.device_count()} global devices, mesh ('{DATA_AXIS}': "
              f"{jax.device_count()}) [{launcher}]", file=sys.stderr, flush=True)


def _connect_cpu_collectives(timeout):
    """Open Gloo's connections between the processes now, with all of them at the same point.
    Gloo gives the others 30 s to turn up the first time a program with collectives runs
    (later runs wait as long as it takes), and compiling or loading data on a busy host can
    put processes further apart than that: the first collective would fail. The coordination
    service's barrier waits up to `timeout` seconds; the program is compiled before it."""
    from orbax.checkpoint import multihost  # here: only multi-process CPU jobs need it

    mesh = make_mesh()
    ones = jax.make_array_from_process_local_data(
        batch_sharding(mesh), np.ones(local_device_count(mesh), np.int32))
    count = jax.jit(jnp.sum, out_shardings=replicated(mesh)).lower(ones).compile()
    multihost.get_barrier_sync_fn()(key="jaxseg_connect_collectives", timeout_ms=timeout * 1000)
    if int(count(ones)) != jax.device_count():
        raise JaxsegError("the processes' first collective miscounted the devices")

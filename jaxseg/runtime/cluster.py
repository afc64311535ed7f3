"""Joining a multi-process job: the one start-up path of every CLI (SLURM, Open MPI, Cloud
TPU, JAX_COORDINATOR_ADDRESS or explicit flags), and Gloo's connections on CPU hosts."""

import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import JaxsegError
from jaxseg.runtime.mesh import (DATA_AXIS, batch_sharding, local_device_count, make_mesh,
                                 replicated)

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


ANNOUNCE_WAIT_S = 2.0  # a join that takes longer than this says whom it waits for


def _rank_from_environment():
    """This process's index in a launch found in the environment, or None."""
    for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "JAX_PROCESS_ID", "TPU_WORKER_ID"):
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
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
    # Joining waits for every process: once it takes a moment, say for whom and how long
    # (process 0, or every process when the launcher does not say which one this is).
    announce = None
    if (process_id if process_id is not None else _rank_from_environment()) in (0, None):
        total = num_processes or (found[1] if found else None)
        where = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the coordinator"
        message = (f"distributed: waiting up to {timeout} s for {total or 'all'} processes to "
                   f"join at {where} ({launcher})")
        announce = threading.Timer(ANNOUNCE_WAIT_S, print, (message,),
                                   {"file": sys.stderr, "flush": True})
        announce.daemon = True
        announce.start()
    # CPU hosts (and tests) need a collectives backend across processes; GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
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
    finally:
        if announce is not None:
            announce.cancel()
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

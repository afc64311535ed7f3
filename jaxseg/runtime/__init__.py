"""The runtime: how jaxseg's programs are shaped, compiled and placed on each backend, decided
here and nowhere else. One module per concern:

    backend   convolution forms (1x1 as matmuls, Winograd 3x3, block barriers), XLA compiler
              options (`runtime.jit`), the compute dtype
    loops     rolled or unrolled attack / descent loops per backend
    heap      glibc keeps freed memory on CPU-only hosts (opt-in: the CLIs apply it)
    mesh      the 'data' mesh, batch sharding, host <-> device transfers across processes
    cluster   joining a multi-process job (SLURM, Open MPI, Cloud TPU, explicit flags)

Importing jaxseg.runtime changes nothing in the process; `keep_freed_memory()` is the one call
with a process-wide effect, and only the command-line tools (and benchmarks) make it.
"""

from jaxseg.runtime.backend import (COMPUTE_DTYPES, WINOGRAD_MIN_MACS, compiler_options,
                                    compute_dtype, conv_policy, jit, materialize_blocks,
                                    pointwise_matmul, winograd_convs)
from jaxseg.runtime.cluster import (DISTRIBUTED_MODES, cluster_environment,
                                    initialize_distributed)
from jaxseg.runtime.heap import HEAP_ENV, HEAP_MODES, cpu_only, keep_freed_memory
from jaxseg.runtime.loops import (LIMIT_ENV, LOOP_MODES, UNROLL_ENV, UNROLL_LIMIT, chunk,
                                  largest_divisor, loop_mode, loop_policy, unroll,
                                  unroll_limit)
from jaxseg.runtime.mesh import (DATA_AXIS, all_rows, batch_sharding, is_main_process,
                                 local_device_count, make_mesh, on_every_process, place,
                                 replicate, replicated, shard_batch, sum_over_processes,
                                 to_host)

__all__ = [
    "COMPUTE_DTYPES", "WINOGRAD_MIN_MACS", "compiler_options", "compute_dtype",
    "conv_policy", "jit", "materialize_blocks", "pointwise_matmul", "winograd_convs",
    "DISTRIBUTED_MODES", "cluster_environment", "initialize_distributed",
    "HEAP_ENV", "HEAP_MODES", "cpu_only", "keep_freed_memory",
    "LIMIT_ENV", "LOOP_MODES", "UNROLL_ENV", "UNROLL_LIMIT", "chunk", "largest_divisor",
    "loop_mode", "loop_policy", "unroll", "unroll_limit",
    "DATA_AXIS", "all_rows", "batch_sharding", "is_main_process", "local_device_count",
    "make_mesh", "on_every_process", "place", "replicate", "replicated", "shard_batch",
    "sum_over_processes", "to_host",
]

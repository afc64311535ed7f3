"""The multi-process flags every CLI shares, and the one start-up call they make."""

from jaxseg import runtime


def add_arguments(parser):
    group = parser.add_argument_group("multi-process jobs")
    group.add_argument("--distributed", default="auto", choices=runtime.DISTRIBUTED_MODES,
                       help="auto: join when SLURM / Open MPI / Cloud TPU / "
                       "JAX_COORDINATOR_ADDRESS shows a multi-process job (default); on: join "
                       "or stop; off: never join (and stop inside a multi-process launch)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)


def start(args, tool):
    """Join the job per the parsed flags (see `runtime.initialize_distributed`)."""
    runtime.initialize_distributed(args.distributed, args.coordinator, args.num_processes,
                                   args.process_id, tool=tool)

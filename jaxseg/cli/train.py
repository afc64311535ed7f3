"""Train an FCN, standard or adversarial, on one device, many, or many hosts.

    python train.py --config configs/demo.py --workdir workdirs/demo [--config.steps=300 ...]

Multi-host: run the same command on every host with --coordinator HOST:PORT --num-processes N
--process-id I (or let JAX read its usual environment variables). Re-running with the same
workdir resumes from its latest checkpoint. SIGTERM / SIGINT save a checkpoint and exit.
"""

import argparse
import sys

from jaxseg import config as configs
from jaxseg import runtime
from jaxseg.errors import cli_guard, exit_on_interrupt
from jaxseg.train import train


@cli_guard
def main(argv=None):
    argv, overrides = configs.split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    args = parser.parse_args(argv)
    runtime.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    config = configs.apply_overrides(configs.load(args.config), overrides)
    result = train(config, args.workdir)
    print(f"trained {result['model'].arch} to step {result['step']}: {args.workdir}")
    return 0


if __name__ == "__main__":
    exit_on_interrupt()
    sys.exit(main())

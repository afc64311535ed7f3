"""Train an FCN, standard or adversarial, on one device, many, or many hosts.

    python train.py --config configs/demo.py --workdir workdirs/demo [--config.steps=300 ...]

Multi-host: under SLURM, Open MPI or Cloud TPU (or with JAX_COORDINATOR_ADDRESS) every process
joins the job by itself (--distributed auto); elsewhere run the same command on every host with
--coordinator HOST:PORT --num-processes N --process-id I. Re-running with the same
workdir resumes from its latest checkpoint. SIGTERM / SIGINT save a checkpoint and exit with
code 75 / 130 (not finished: rerun to resume); a finished run exits 0.
"""

import sys

from jaxseg import config as configs
from jaxseg.cli import distributed
from jaxseg.cli import ArgumentParser, start_process
from jaxseg.errors import STOPPED_EXIT_CODES, cli_guard
from jaxseg.train import train


@cli_guard
def main(argv=None):
    argv, overrides = configs.split_overrides(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--workdir", required=True)
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    distributed.start(args, "train.py")
    config = configs.apply_overrides(configs.load(args.config), overrides)
    result = train(config, args.workdir)
    if result["stopped_by"]:  # saved, not finished: schedulers requeue on this code
        return STOPPED_EXIT_CODES[result["stopped_by"]]
    print(f"trained {config.model.arch} to step {result['step']}: {args.workdir}")
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

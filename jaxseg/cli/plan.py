"""Plan a training run before renting the pod: FLOPs, peak memory per device, the largest
batch that fits, and a roofline step time, for abstract shapes (nothing is trained).

    python -m jaxseg.cli.plan --config configs/coco_fcn50_at.py [--batches 1,2,4,8,16] \
        [--remat none,full] [--dtypes float32,bfloat16] [--accelerator h100] [--memory-gb 80] \
        [--devices 8] [--train-images 92518] [--output plan.md] [--config.model.arch=...]

After the table: the run as the config writes it (its steps, or epochs x the training split's
batches) at its global batch over --devices, with the roofline wall time and device-hours.

Peak memory comes from the memory analysis of the backend it runs on: on a CPU-only machine
XLA:CPU's, an approximation of what XLA:GPU allocates, not a GPU measurement (jaxseg/plan.py
says what each column is).
"""

import math
import sys

from jaxseg import plan as planning

if __name__ == "__main__":
    planning.set_cpu_scheduler()  # before JAX starts its CPU backend

from jaxseg import config as configs  # noqa: E402
from jaxseg.cli import ArgumentParser, start_process  # noqa: E402
from jaxseg.errors import JaxsegError, cli_guard  # noqa: E402
from jaxseg.io import write_text  # noqa: E402


def _list(text, flag, kind=str):
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise JaxsegError(f"--{flag} {text!r}: expected a comma-separated list") from None
    if not values:
        raise JaxsegError(f"--{flag} is empty")
    return values


@cli_guard
def main(argv=None):
    argv, overrides = configs.split_overrides(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--batches", default="1,2,4,8,16", help="per-device batch sizes")
    parser.add_argument("--remat", default="none,full", help="of none, convs, full")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--accelerator", default="h100", choices=planning.ACCELERATORS)
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="device memory for the largest batch (default: the accelerator's)")
    parser.add_argument("--devices", type=int, default=8,
                        help="devices the run's global batch is split over (default 8)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="training images per epoch, for a config that counts epochs")
    parser.add_argument("--no-eval", action="store_true", help="plan the train step only")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    config = configs.apply_overrides(configs.load(args.config), overrides)
    for dtype in _list(args.dtypes, "dtypes"):
        if dtype not in ("float32", "bfloat16"):
            raise JaxsegError(f"--dtypes: {dtype!r} is not float32 or bfloat16")
    memory = planning.ACCELERATORS[args.accelerator]["memory_gb"] if args.memory_gb is None \
        else args.memory_gb
    if not math.isfinite(memory) or memory <= 0:
        raise JaxsegError(f"--memory-gb must be a positive number of GB, got {args.memory_gb}")
    if args.devices < 1:
        raise JaxsegError(f"--devices must be >= 1, got {args.devices}")
    if args.train_images is not None and args.train_images < config.batch_size:
        raise JaxsegError(f"--train-images {args.train_images} is less than one global batch "
                          f"({config.batch_size})")
    rows = planning.plan(config, batches=_list(args.batches, "batches", int),
                         remats=_list(args.remat, "remat"), dtypes=_list(args.dtypes, "dtypes"),
                         accelerator=args.accelerator, evaluation=not args.no_eval,
                         log=lambda row: print(row.line(), file=sys.stderr, flush=True))
    table = planning.markdown(rows, planning.largest_batch(rows, memory), args.accelerator,
                              memory)
    table += "\n\n" + "\n".join(planning.run_estimate(config, rows, args.devices,
                                                     args.accelerator, args.train_images))
    header = (f"{args.config} ({config.model.arch}, crop {tuple(config.data.crop_size)}, "
              f"adv {config.adv.mode}"
              + (f" {config.adv.attack} x{config.adv.steps}" if config.adv.mode != "none" else "")
              + ")\n\n")
    print(header + table)
    if args.output:
        write_text(args.output, header + table + "\n")
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

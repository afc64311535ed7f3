"""Clean and robust accuracy / mIoU of checkpoints (Table 1), and robustness curves.

    python evaluate.py --checkpoint ckpt/pre --data camvid:data/camvid --split val \
        --attack pgd --attack segpgd --eps 8/255 --steps 10 --eps-curve 0,2/255,4/255,8/255 \
        --output results/pre
    python evaluate.py --checkpoint ckpt/at --data camvid:data/camvid --attack sea \
        --eps 4/255 --output results/at_sea          # the strongest evaluation (hours on COCO)

Writes OUTPUT/results.md (Table-1 style), results.json (per-class IoU too),
per_image/<model>/<attack>.npz (per-image TP / FP / FN per class, from which the worst case
over any attacks, run now or later, is recomputed), and with --eps-curve: curve.json and
curve.png. Several --checkpoint flags evaluate models side by side.
"""

import sys

from jaxseg import attacks, models, runtime
from jaxseg.attacks import losses
from jaxseg.config.overrides import parse_keyvalues, parse_number, parse_size
from jaxseg.cli import distributed
from jaxseg.cli import ArgumentParser, start_process
from jaxseg.errors import cli_guard
from jaxseg.evaluation.report import evaluate_checkpoints, markdown_table


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a jaxseg checkpoint or training workdir; repeat for several models")
    parser.add_argument("--name", action="append", default=None, help="display name per checkpoint")
    parser.add_argument("--data", default="synthetic", help="a jaxseg.data.get_dataset spec")
    parser.add_argument("--split", default="val")
    parser.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset keyword argument, e.g. size=(96,96)")
    parser.add_argument("--num-images", type=int, default=None, help="first N images only")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--short-side", type=int, default=None, help="eval resize (e.g. 520)")
    parser.add_argument("--pad-to", default=None, help="H,W: pad images to one size")
    parser.add_argument("--attack", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                        help=f"preset, repeatable: {', '.join(attacks.PRESETS)}; settings of its "
                        "own (steps, restarts, step_size, loss) take precedence over the shared "
                        "flags, e.g. --attack sea:steps=300 --attack pgd:steps=20,restarts=3")
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", type=int, default=None,
                        help="shared by every attack without its own (default 10; apgd 100; sea "
                        "300 per loss)")
    parser.add_argument("--norm", default=None, choices=("linf", "l2"),
                        help="ball of every attack (default: the preset's; L2 eps is per image, "
                        "e.g. --attack sea --norm l2 --eps 0.5)")
    parser.add_argument("--loss", default=None, choices=losses.ATTACK_LOSSES,
                        help="attack loss for apgd / apgd_red / pgd-like presets")
    parser.add_argument("--class-counts", default=None, metavar="FILE",
                        help="JSON: training pixels per class, for mce_bal / sea (default: "
                        "counted from --data's train split, cached)")
    parser.add_argument("--worst-case", action="store_true",
                        help="add the per-image worst case over all attacks of each model at "
                        "this eps and norm: this run's and those stored earlier in "
                        "OUTPUT/per_image for the same model and data (without --attack: the "
                        "stored ones)")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="pictures of what each attack did to the first N images "
                        "(OUTPUT/show/<model>/<attack>.png) and a per-class IoU chart")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--step-size", default=None)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--eps-curve", default=None, help="comma-separated eps values")
    parser.add_argument("--curve-attack", default="pgd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=runtime.COMPUTE_DTYPES,
                        help="compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)")
    parser.add_argument("--remat", default="none", choices=models.REMAT_POLICIES,
                        help="rematerialise each ResNet block in attack gradients (less memory)")
    parser.add_argument("--output", required=True, help="directory for the results")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


@cli_guard
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    distributed.start(args, "evaluate.py")
    results = evaluate_checkpoints(
        args.checkpoint, names=args.name, output=args.output, data=args.data, split=args.split,
        data_kwargs=parse_keyvalues(args.data_arg, "data-arg"), num_images=args.num_images,
        batch_size=args.batch_size, short_side=args.short_side,
        pad_to=parse_size(args.pad_to, "pad-to") if args.pad_to else None,
        attacks=args.attack, eps=parse_number(args.eps, "eps"), steps=args.steps,
        loss=args.loss, class_counts=args.class_counts, worst=args.worst_case, quiet=args.quiet,
        step_size=None if args.step_size is None else parse_number(args.step_size, "step-size"),
        restarts=args.restarts, seed=args.seed, dtype=args.dtype, remat=args.remat, norm=args.norm,
        show=args.show,
        curve_attack=args.curve_attack,
        eps_curve=[parse_number(v, "eps-curve") for v in args.eps_curve.split(",")]
        if args.eps_curve else None,
        log=lambda line: print(line, flush=True))
    if runtime.is_main_process():
        print(markdown_table(results))
        print(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

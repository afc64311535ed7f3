"""Clean and robust accuracy / mIoU of checkpoints (Table 1), and robustness curves.

    python evaluate.py --checkpoint ckpt/pre --data camvid:../shared/data/camvid --split val \
        --attack pgd --attack segpgd --eps 8/255 --steps 10 --eps-curve 0,2/255,4/255,8/255 \
        --output results/pre

Writes OUTPUT/results.md (Table-1 style), results.json (per-class IoU too), and with
--eps-curve: curve.json and curve.png. Several --checkpoint flags evaluate models side by side.
"""

import argparse
import json
import os
import sys

import jax

from jaxseg import attacks, checkpoint, configfile, data, evaluation, plots
from jaxseg.errors import JaxsegError, cli_guard
from jaxseg.configfile import parse_number as number
from jaxseg.files import write_text


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--attack", action="append", default=[],
                        help=f"preset, repeatable: {', '.join(attacks.PRESETS)}")
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-size", default=None)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--eps-curve", default=None, help="comma-separated eps values")
    parser.add_argument("--curve-attack", default="pgd")
    parser.add_argument("--unroll", choices=tuple(attacks.UNROLL_CHOICES), default="auto",
                        help="unroll the attack loops: faster steps on CPU, compile time grows "
                        f"with steps x restarts (auto: up to {attacks.UNROLL_LIMIT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="directory for the results")
    return parser.parse_args(argv)


@cli_guard
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = args.name or [os.path.basename(os.path.normpath(c)) for c in args.checkpoint]
    if len(names) != len(args.checkpoint):
        raise JaxsegError(f"{len(names)} --name values for {len(args.checkpoint)} checkpoints")
    eps = number(args.eps, "eps")
    attacks.check_hyper(eps, 1.0)  # also when only the clean row is asked for
    step_size = None if args.step_size is None else number(args.step_size, "step-size")
    unroll = attacks.UNROLL_CHOICES[args.unroll]
    specs = {"clean": None}
    for name in args.attack:
        specs[name] = attacks.make(name, eps=eps, steps=None if name == "fgsm" else args.steps,
                                   step_size=step_size, restarts=args.restarts, unroll=unroll)
    curve_eps = None
    if args.eps_curve:
        curve_eps = [number(v, "eps-curve") for v in args.eps_curve.split(",")]
        attacks.make(args.curve_attack, eps=max(curve_eps), steps=args.steps)  # validate
    pad_to = tuple(int(v) for v in args.pad_to.split(",")) if args.pad_to else None

    kwargs = configfile.parse_keyvalues(args.data_arg, "data-arg")
    dataset = data.get_dataset(args.data, args.split, **kwargs)
    if args.num_images:
        from jaxseg.trainer import Subset
        dataset = Subset(dataset, args.num_images)
    loaded = [checkpoint.load(path) for path in args.checkpoint]  # all errors before any work
    for path, (model, _) in zip(args.checkpoint, loaded):
        if model.num_classes != dataset.info.num_classes:
            raise JaxsegError(f"{path}: model has {model.num_classes} classes, data "
                              f"{args.data} has {dataset.info.num_classes}")
    os.makedirs(args.output, exist_ok=True)

    loader = lambda: data.eval_loader(dataset, args.batch_size, short_side=args.short_side,  # noqa: E731
                                      pad_to=pad_to)
    key = jax.random.key(args.seed)
    results, curves = {}, {}
    for name, (model, variables) in zip(names, loaded):
        results[name] = {}
        for attack_name, spec in specs.items():
            confusion = evaluation.confusion_over(model, variables, loader(), spec, key)
            results[name][attack_name] = evaluation.metrics.summarize(confusion, dataset.info.class_names)
            print(f"{name} {attack_name}: pixel acc {100 * results[name][attack_name]['pixel_acc']:.1f} "
                  f"mIoU {100 * results[name][attack_name]['miou']:.1f}", flush=True)
        if curve_eps:
            curves[name] = []
            for value in curve_eps:
                spec = attacks.make(args.curve_attack, eps=value, steps=args.steps, unroll=unroll)
                confusion = evaluation.confusion_over(model, variables, loader(), spec, key)
                curves[name].append((value, evaluation.metrics.summarize(confusion)))

    header = (f"data {args.data} ({args.split}, {len(dataset)} images); attacks: eps {args.eps}, "
              f"{args.steps} steps, {args.restarts} restart(s)\n\n")
    write_text(os.path.join(args.output, "results.md"), header + evaluation.markdown_table(results) + "\n")
    write_text(os.path.join(args.output, "results.json"), json.dumps(
        {"data": args.data, "split": args.split, "images": len(dataset), "eps": eps,
         "steps": args.steps, "restarts": args.restarts, "checkpoints": dict(zip(names, args.checkpoint)),
         "results": results}, indent=2))
    if curves:
        write_text(os.path.join(args.output, "curve.json"), json.dumps(
            {"attack": args.curve_attack, "steps": args.steps, "curves": {
                n: [{"eps": e, "pixel_acc": s["pixel_acc"], "miou": s["miou"]} for e, s in pts]
                for n, pts in curves.items()}}, indent=2))
        plots.robustness_curve(curves, os.path.join(args.output, "curve.png"), attack=args.curve_attack)
    print(evaluation.markdown_table(results))
    print(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

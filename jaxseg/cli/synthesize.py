"""Inpaint, generate or edit images with one or more segmentation models, side by side.

    python synthesize.py inpaint --checkpoint ckpt/std --checkpoint ckpt/at --name std --name AT \
        --data synthetic --split val --index 0 --index 1 --mask rect:30,30,36,36 --output out/inp
    python synthesize.py generate --checkpoint ckpt/at --image photo.png --label photo_mask.png \
        --steps 60 --gif --output out/gen
    python synthesize.py edit --checkpoint ckpt/at --data synthetic --index 3 --swap disc:star \
        --output out/edit      # or: --paint box --mask rect:10,10,30,30

Writes OUTPUT/grid.png (original | target | start | one result per model, a row per image),
OUTPUT/raw/*.png (every image at full resolution), OUTPUT/metrics.json (PSNR, SSIM, hole
accuracy, high-frequency ratio per image and model, and their means), and with --gif
OUTPUT/trajectory.gif. Every input is checked before any work; errors are one line, exit 2.
"""

import sys

from jaxseg import models, runtime
from jaxseg.config.overrides import parse_keyvalues, parse_number
from jaxseg.cli import distributed
from jaxseg.cli import ArgumentParser, start_process
from jaxseg.errors import cli_guard
from jaxseg.synthesis import descent, objectives
from jaxseg.synthesis.session import MODES, Request, synthesize


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a jaxseg checkpoint or training workdir; repeat to compare models")
    parser.add_argument("--name", action="append", default=None, help="display name per checkpoint")
    source = parser.add_argument_group("input: --image (+ --label) or --data + --index")
    source.add_argument("--image", action="append", default=[], help="an RGB image file")
    source.add_argument("--label", action="append", default=[],
                        help="its segmentation PNG (class ids, 255 ignored); one per --image")
    source.add_argument("--data", default=None, help="a jaxseg.data.get_dataset spec")
    source.add_argument("--split", default="val")
    source.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset keyword argument, e.g. size=(96,96)")
    source.add_argument("--index", action="append", type=int, default=[],
                        help="dataset index, repeatable (default 0)")
    parser.add_argument("--mask", default=None,
                        help="hole: rect:x,y,w,h | class:k | random:n[,seed] | all | FILE.png")
    parser.add_argument("--paint", default=None, help="edit: paint this class into --mask")
    parser.add_argument("--swap", default=None, metavar="A:B", help="edit: turn class A into B")
    parser.add_argument("--method", choices=objectives.KINDS, default="inpaint",
                        help="edit: re-inpaint the edited region (default) or generate anew")
    parser.add_argument("--steps", type=int, default=None, help="default 720 inpaint, 60 generate")
    parser.add_argument("--step-size", default=None,
                        help="default: Santurkar's, scaled to the image")
    parser.add_argument("--lambda", dest="lam", default=None, help="inpainting penalty weight (10)")
    parser.add_argument("--penalty", choices=objectives.PENALTIES, default="mse")
    parser.add_argument("--rule", choices=descent.RULES, default="l2")
    parser.add_argument("--radius", default=None,
                        help="L2 trust region around the start (a number, or 'santurkar')")
    parser.add_argument("--jitter", default="0", help="std of start noise in the hole")
    parser.add_argument("--bn", choices=("running", "batch"), default="running")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=runtime.COMPUTE_DTYPES,
                        help="compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)")
    parser.add_argument("--remat", default="none", choices=models.REMAT_POLICIES,
                        help="rematerialise each ResNet block in the descent (less memory)")
    parser.add_argument("--gif", action="store_true", help="also write trajectory.gif")
    parser.add_argument("--frames", type=int, default=24,
                        help="GIF frames (at most; a divisor of steps is used)")
    parser.add_argument("--output", required=True, help="directory for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)



def _number(text, flag):
    return None if text is None else parse_number(text, flag)


@cli_guard
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    distributed.start(args, "synthesize.py")
    radius = args.radius
    if radius is not None and str(radius).strip().lower() != "santurkar":
        radius = parse_number(radius, "radius")
    request = Request(
        args.mode, checkpoint=tuple(args.checkpoint), output=args.output,
        name=tuple(args.name) if args.name else None, image=tuple(args.image),
        label=tuple(args.label), data=args.data, split=args.split,
        data_kwargs=tuple(parse_keyvalues(args.data_arg, "data-arg").items()),
        index=tuple(args.index), mask=args.mask, paint=args.paint, swap=args.swap,
        method=args.method, steps=args.steps, step_size=_number(args.step_size, "step-size"),
        lam=_number(args.lam, "lambda"), penalty=args.penalty, rule=args.rule, radius=radius,
        jitter=parse_number(args.jitter, "jitter"), bn=args.bn, seed=args.seed, dtype=args.dtype,
        remat=args.remat, gif=args.gif,
        frames=args.frames, quiet=args.quiet)
    synthesize(request)
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

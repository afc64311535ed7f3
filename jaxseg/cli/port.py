"""PyTorch weights in and out (torchvision FCN / ResNet, robustness library); see
jaxseg.models.port.

    python -m jaxseg.cli.port import fcn_resnet50_coco.pth ckpt/pre
    python -m jaxseg.cli.port import resnet50_l2_eps3.ckpt ckpt/rb --num-classes 21
    python -m jaxseg.cli.port export ckpt/at50 fcn_resnet50_at.pth
"""

import os
import sys

from jaxseg import models
from jaxseg.cli import ArgumentParser, start_process
from jaxseg.errors import JaxsegError, cli_guard
from jaxseg.models import port


def _parse_args(argv):
    parser = ArgumentParser(prog="python -m jaxseg.cli.port", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="PyTorch checkpoint -> jaxseg (orbax) checkpoint")
    imp.add_argument("source_file")
    imp.add_argument("output_dir")
    imp.add_argument("--source", choices=port.SOURCES, default="auto")
    imp.add_argument("--arch", choices=sorted(models.ARCHS), default=None,
                     help="must match the file; inferred when omitted")
    imp.add_argument("--num-classes", type=int, default=None,
                     help="classes of fresh heads for backbone-only sources (default 21)")
    imp.add_argument("--no-aux", action="store_true", help="no aux head (backbone-only sources)")
    imp.add_argument("--seed", type=int, default=0, help="initialisation of fresh heads")
    imp.add_argument("--overwrite", action="store_true")
    exp = sub.add_parser("export", help="jaxseg checkpoint -> torchvision state dict (.pth)")
    exp.add_argument("checkpoint")
    exp.add_argument("output_file")
    exp.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


@cli_guard
def main(argv=None):
    args = _parse_args(argv)
    if args.command == "import":
        if os.path.exists(args.output_dir) and not args.overwrite:
            raise JaxsegError(f"{args.output_dir}: already exists (use --overwrite)")
        model, variables, found = port.port(args.source_file, arch=args.arch, num_classes=args.num_classes,
                                       aux=not args.no_aux, source=args.source, seed=args.seed)
        models.save(args.output_dir, model, variables, overwrite=args.overwrite)
        print(f"ported {found} checkpoint {args.source_file} -> {args.output_dir}")
        print(port.summary(model, variables))
    else:
        if os.path.isdir(args.output_file):
            raise JaxsegError(f"{args.output_file}: is a directory; give a file name (.pth)")
        if os.path.exists(args.output_file) and not args.overwrite:
            raise JaxsegError(f"{args.output_file}: already exists (use --overwrite)")
        model, variables = models.load(args.checkpoint)
        port.export_pth(variables, args.output_file)
        print(f"exported {model.arch} ({model.num_classes} classes) -> {args.output_file}")


if __name__ == "__main__":
    start_process()
    sys.exit(main())

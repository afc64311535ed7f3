"""Build the COCO -> VOC21 label-map cache ahead of training (it is built on first use otherwise).

    python -m jaxseg.cli.coco /data/coco --split train --cache /data/coco_voc21 --workers 8
"""

import os
import sys

from jaxseg.data.coco import coco_voc
from jaxseg.cli import ArgumentParser, start_process
from jaxseg.errors import cli_guard


@cli_guard
def main(argv=None):
    parser = ArgumentParser(prog="python -m jaxseg.cli.coco",
                            description="Convert COCO 2017 instance annotations to "
                            "21-class VOC label maps (cached PNGs).")
    parser.add_argument("root", help="COCO root with annotations/ and <split>2017/")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--cache", default=None, help="cache folder (default ~/.cache/jaxseg)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    dataset = coco_voc(args.root, args.split, cache_dir=args.cache, workers=args.workers)
    print(f"coco {args.split}: {len(dataset)} images kept, {dataset.dropped} dropped")
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

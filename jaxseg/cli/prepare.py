"""Fetch CamVid, PASCAL VOC 2012 or COCO 2017 from their official sources and arrange them where
`get_dataset` reads them (jaxseg.data.prepare: resumable, checked, never half-extracted).

    python -m jaxseg.cli.prepare camvid --download   # -> data/camvid at 240x180 (camvid:data/camvid)
    python -m jaxseg.cli.prepare voc --download --verify
    python -m jaxseg.cli.prepare coco --download     # ~19 GB; builds the VOC21 cache
"""

import sys

from jaxseg.cli import ArgumentParser, start_process
from jaxseg.data.prepare import DEFAULT_ROOT, SOURCES, prepare
from jaxseg.errors import cli_guard


@cli_guard
def main(argv=None):
    parser = ArgumentParser(prog="python -m jaxseg.cli.prepare",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(SOURCES))
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help="where downloads/ and the dataset go (default: %(default)s)")
    parser.add_argument("--download", action="store_true", help="fetch missing archives")
    parser.add_argument("--verify", action="store_true",
                        help="re-check the archives and open every split")
    parser.add_argument("--mirror", default=None, help="fetch archives from MIRROR/<file name>")
    parser.add_argument("--workers", type=int, default=1, help="COCO label-cache processes")
    args = parser.parse_args(argv)
    prepare(args.dataset, args.root, download=args.download, verify=args.verify,
            mirror=args.mirror, workers=args.workers)
    return 0


if __name__ == "__main__":
    start_process()
    sys.exit(main())

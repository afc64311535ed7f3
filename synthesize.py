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

import argparse
import json
import os
import re
import sys

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxseg import attacks, checkpoint, configfile, data, losses, masks, parallel, quality, synthesis
from jaxseg.configfile import parse_number as number
from jaxseg.errors import JaxsegError, cli_guard
from jaxseg.files import atomic_path, write_text
from jaxseg.visualize import image_grid, save_png, to_uint8

MODES = ("inpaint", "generate", "edit")
# Metrics of the pixels alone, also reported for the start (the mean fill) as a baseline.
PIXEL_METRICS = ("psnr", "psnr_lowpass", "ssim", "high_frequency", "high_frequency_original")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--method", choices=synthesis.KINDS, default="inpaint",
                        help="edit: re-inpaint the edited region (default) or generate anew")
    parser.add_argument("--steps", type=int, default=None, help="default 720 inpaint, 60 generate")
    parser.add_argument("--step-size", default=None,
                        help="default: Santurkar's, scaled to the image")
    parser.add_argument("--lambda", dest="lam", default=None, help="inpainting penalty weight (10)")
    parser.add_argument("--penalty", choices=synthesis.PENALTIES, default="mse")
    parser.add_argument("--rule", choices=synthesis.RULES, default="l2")
    parser.add_argument("--radius", default=None,
                        help="L2 trust region around the start (a number, or 'santurkar')")
    parser.add_argument("--jitter", default="0", help="std of start noise in the hole")
    parser.add_argument("--bn", choices=("running", "batch"), default="running")
    parser.add_argument("--unroll", choices=tuple(attacks.UNROLL_CHOICES), default="auto",
                        help=f"auto: descents of up to {attacks.UNROLL_LIMIT} steps as one "
                        "unrolled program, longer ones as a host loop of unrolled chunks; on / "
                        "off: one unrolled / rolled program")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gif", action="store_true", help="also write trajectory.gif")
    parser.add_argument("--frames", type=int, default=24,
                        help="GIF frames (at most; a divisor of steps is used)")
    parser.add_argument("--output", required=True, help="directory for the results")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Inputs


def read_image(path):
    if not os.path.isfile(path):
        raise JaxsegError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise JaxsegError(f"{path}: not a readable image ({type(err).__name__})") from err


def read_label(path, shape):
    if not os.path.isfile(path):
        raise JaxsegError(f"{path}: no such label file")
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise JaxsegError(f"{path}: a label must be a palette or grey PNG of class ids, "
                                  f"not mode {image.mode}")
            label = np.asarray(image).astype(np.int64)
    except (UnidentifiedImageError, OSError) as err:
        raise JaxsegError(f"{path}: not a readable label image ({type(err).__name__})") from err
    if label.shape != shape:
        raise JaxsegError(f"{path}: label is {label.shape[1]}x{label.shape[0]}, its image "
                          f"{shape[1]}x{shape[0]}")
    return label


def load_examples(args, num_classes):
    """[(id, image uint8 [H,W,3], label [H,W])], class names, colorize."""
    if args.image and args.data:
        raise JaxsegError("give --image or --data, not both")
    if args.image:
        if args.index:
            raise JaxsegError("--index selects from --data; it does not apply to --image")
        if len(args.label) != len(args.image):
            raise JaxsegError(f"{len(args.image)} --image but {len(args.label)} --label: every "
                              "image needs its segmentation (the target y of eqs. 6 and 7)")
        examples = []
        for image_path, label_path in zip(args.image, args.label):
            image = read_image(image_path)
            label = read_label(label_path, image.shape[:2])
            stem = os.path.splitext(os.path.basename(image_path))[0]
            examples.append((stem, image, label))
        info = data.DatasetInfo("images", tuple(str(k) for k in range(num_classes)),
                                data.default_palette(num_classes))
        return examples, info
    if not args.data:
        raise JaxsegError("no input: give --image PATH --label PATH, or --data SPEC --index I")
    if args.label:
        raise JaxsegError("--label goes with --image; --data brings its own labels")
    kwargs = configfile.parse_keyvalues(args.data_arg, "data-arg")
    dataset = data.get_dataset(args.data, args.split, **kwargs)
    if dataset.info.num_classes != num_classes:
        raise JaxsegError(f"the models have {num_classes} classes, data {args.data} has "
                          f"{dataset.info.num_classes}")
    examples = []
    for index in args.index or [0]:
        if not 0 <= index < len(dataset):
            raise JaxsegError(f"--index {index} is out of range: {args.data} ({args.split}) has "
                              f"{len(dataset)} examples")
        item = dataset[index]
        examples.append((f"{index:05d}", item["image"], np.asarray(item["label"])))
    return examples, dataset.info


def load_models(args):
    names = args.name or [os.path.basename(os.path.normpath(c)) for c in args.checkpoint]
    if len(names) != len(args.checkpoint):
        raise JaxsegError(f"{len(names)} --name values for {len(args.checkpoint)} checkpoints")
    if len(set(names)) != len(names):
        raise JaxsegError(f"model names must differ, got {', '.join(names)} (use --name)")
    loaded = [checkpoint.load(path) for path in args.checkpoint]
    classes = {model.num_classes for model, _ in loaded}
    if len(classes) > 1:
        raise JaxsegError("the checkpoints predict different numbers of classes: "
                          f"{sorted(classes)}")
    return names, loaded, classes.pop()


# ---------------------------------------------------------------------------------------------
# Targets and holes


def target_and_hole(args, image, label, info, seed):
    """(target segmentation, hole mask, kind) for one example, or a one-line error."""
    height, width = label.shape
    spec = lambda s: masks.parse(s, height, width, label, info.class_names, seed)  # noqa: E731
    if args.mode == "generate":
        if args.mask:
            raise JaxsegError("generate synthesises the whole image; --mask does not apply")
        return label, np.ones_like(label, bool), "generate"
    if args.mode == "inpaint":
        if not args.mask:
            raise JaxsegError("inpaint needs --mask (rect:x,y,w,h, class:k, random:n, or a PNG)")
        return label, spec(args.mask), "inpaint"
    # edit
    if (args.paint is None) == (args.swap is None):
        raise JaxsegError("edit needs exactly one of --paint CLASS (with --mask) or --swap A:B")
    if args.paint is not None:
        if not args.mask:
            raise JaxsegError("--paint needs --mask: the region to paint the class into")
        region = spec(args.mask)
        target = synthesis.paint_class(label, region, masks.class_id(args.paint, info.class_names))
        hole = region
    else:
        if args.mask:
            raise JaxsegError("--swap edits every pixel of class A; --mask does not apply")
        a, sep, b = args.swap.partition(":")
        if not sep:
            raise JaxsegError(f"--swap {args.swap!r} must look like A:B (class ids or names)")
        a, b = masks.class_id(a, info.class_names), masks.class_id(b, info.class_names)
        if a == b:
            raise JaxsegError(f"--swap {args.swap!r}: the two classes are the same")
        if not (label == a).any():
            raise JaxsegError(f"--swap: class {info.class_names[a]!r} is not present in the image")
        target = synthesis.swap_class(label, a, b)
        hole = synthesis.changed(label, target)
    if args.method == "generate":
        return target, np.ones_like(label, bool), "generate"
    if hole.all():
        raise JaxsegError("the edit covers the whole image; use --method generate")
    return target, hole, "inpaint"


def settings(args, kind, shape):
    """Keyword arguments for `synthesis.run`, validated (all JSON-able)."""
    recipe = synthesis.RECIPES[kind]
    steps = recipe["steps"] if args.steps is None else args.steps
    if steps < 1:
        raise JaxsegError(f"--steps must be >= 1, got {steps}")
    if args.step_size is None:
        step_size = synthesis.default_step_size(kind, shape, args.rule)
    else:
        step_size = number(args.step_size, "step-size")
    lam = recipe["lam"] if args.lam is None else number(args.lam, "lambda")
    if args.radius is None:
        radius = None
    elif str(args.radius).strip().lower() == "santurkar":
        radius = synthesis.default_radius(kind, shape)
    else:
        radius = number(args.radius, "radius")
    if args.frames < 1:
        raise JaxsegError(f"--frames must be >= 1, got {args.frames}")
    frames = synthesis.largest_divisor(steps, args.frames) if args.gif else 0
    options = dict(steps=steps, step_size=step_size, lam=lam, rule=args.rule, radius=radius,
                   penalty=args.penalty, jitter=number(args.jitter, "jitter"), bn=args.bn,
                   frames=frames, unroll=attacks.UNROLL_CHOICES[args.unroll])
    synthesis.check_options(kind, **options)
    return options


# ---------------------------------------------------------------------------------------------
# Running


def pad_batch(arrays, multiple):
    """Repeat the last example so the batch divides the device count; returns the count."""
    n = len(arrays[0])
    extra = (-n) % multiple
    if extra:
        arrays = [np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]) for a in arrays]
    return arrays, n


def synthesize_group(kind, opts, loaded, images, targets, holes, key, mesh):
    """Per model: result images, start, frames, predictions and CE at the result."""
    (images, targets, holes), n = pad_batch([images, targets, holes], mesh.size)
    out = []
    for model, variables in loaded:
        result = synthesis.run(kind, model.apply, variables, images, targets, key,
                               mask=holes if kind == "inpaint" else None, mesh=mesh, **opts)
        logits_fn = jax.jit(lambda v, x, m=model: m.apply(v, x)["out"])
        logits = logits_fn(variables, result.x)
        ce = np.asarray(losses.cross_entropy(logits, targets))
        frames = None if result.frames is None else np.asarray(result.frames)[:, :n]
        out.append({"x": np.asarray(result.x)[:n], "start": np.asarray(result.start)[:n],
                    "frames": frames, "pred": np.asarray(logits.argmax(-1))[:n],
                    "pred_start": np.asarray(logits_fn(variables, result.start).argmax(-1))[:n],
                    "ce_start": np.asarray(result.trace)[0, :n], "ce": ce[:n]})
    return out


def pick_row(key, value, row):
    """Example `row` of one output (frames are [F + 1, N, ...]; the rest [N, ...])."""
    if value is None:
        return None
    return value[:, row] if key == "frames" else value[row]


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def save_gif(frames, path, duration_ms=120):
    """Animated GIF of PIL images, written atomically; the last frame lingers."""
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 10]
    with atomic_path(path, ".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=durations, loop=0)


@cli_guard
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode != "edit" and (args.paint or args.swap):
        raise JaxsegError(f"--paint / --swap belong to edit, not {args.mode}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise JaxsegError(f"--output {args.output}: exists and is not a directory")
    names, loaded, num_classes = load_models(args)
    examples, info = load_examples(args, num_classes)

    # Everything is checked before any synthesis: targets, holes, sizes, settings.
    prepared = []
    for i, (example_id, image, label) in enumerate(examples):
        if label.shape != image.shape[:2]:
            raise JaxsegError(f"example {example_id}: label {label.shape} and image "
                              f"{image.shape[:2]} differ in size")
        target, hole, kind = target_and_hole(args, image, label, info, args.seed + i)
        pixels = image.astype(np.float32)[None] / 255.0
        try:
            synthesis.check_images(pixels, target[None], hole[None] if kind == "inpaint" else None,
                                   num_classes)
        except JaxsegError as err:
            raise JaxsegError(f"example {example_id}: {err}") from None
        prepared.append((example_id, pixels[0], label, target, hole, kind))
    kinds = {p[5] for p in prepared}
    kind = kinds.pop()
    opts = settings(args, kind, prepared[0][1].shape)

    # Same-size examples run as one batch (sharded over all devices).
    mesh = parallel.make_mesh()
    key = jax.random.key(args.seed)
    groups = {}
    for position, p in enumerate(prepared):
        groups.setdefault(p[1].shape, []).append(position)
    results = [None] * len(prepared)
    for shape, members in groups.items():
        group_opts = dict(opts)
        if args.step_size is None:
            group_opts["step_size"] = synthesis.default_step_size(kind, shape, args.rule)
        stack = lambda j: np.stack([prepared[m][j] for m in members])  # noqa: E731
        per_model = synthesize_group(kind, group_opts, loaded, stack(1), stack(3), stack(4),
                                     key, mesh)
        for row, m in enumerate(members):
            results[m] = [{k: pick_row(k, v, row) for k, v in out.items()} for out in per_model]

    # Metrics, then every file (nothing is written before all the work succeeded).
    records, grid_rows, raw, gif_rows = [], [], {}, []
    for (example_id, image, label, target, hole, _), per_model in zip(prepared, results):
        start = per_model[0]["start"]
        baseline = quality.report(start[None], image[None], hole[None],
                                  per_model[0]["pred_start"][None], target[None])[0]
        record = {"id": example_id, "hole_pixels": int(hole.sum()),
                  "start": {k: baseline[k] for k in PIXEL_METRICS}, "models": {}}
        for name, out in zip(names, per_model):
            row = quality.report(out["x"][None], image[None], hole[None], out["pred"][None],
                                 target[None])[0]
            before = quality.hole_accuracy(out["pred_start"], target, hole)[0]
            row["hole_accuracy_start"] = float(before) if np.isfinite(before) else None
            row.update(ce_start=float(out["ce_start"]), ce=float(out["ce"]))
            record["models"][name] = row
        records.append(record)
        columns = [image, info.colorize(target), start] + [out["x"] for out in per_model]
        grid_rows.append(columns)
        raw[f"{example_id}_original.png"] = image
        raw[f"{example_id}_target.png"] = info.colorize(target)
        raw[f"{example_id}_start.png"] = start
        raw[f"{example_id}_mask.png"] = hole.astype(np.uint8) * 255
        for name, out in zip(names, per_model):
            raw[f"{example_id}_{safe(name)}.png"] = out["x"]
            raw[f"{example_id}_{safe(name)}_pred.png"] = info.colorize(out["pred"])
        if args.gif:
            steps = range(len(per_model[0]["frames"]))
            gif_rows.append([[image, info.colorize(target)] + [o["frames"][t] for o in per_model]
                             for t in steps])
    titles = ["original", "target", "start"] + names
    summary = {name: quality.summarize([r["models"][name] for r in records]) for name in names}
    summary["start"] = quality.summarize([r["start"] for r in records])

    os.makedirs(os.path.join(args.output, "raw"), exist_ok=True)
    save_png(image_grid(grid_rows, titles), os.path.join(args.output, "grid.png"))
    for filename, pixels in raw.items():
        save_png(Image.fromarray(to_uint8(pixels)), os.path.join(args.output, "raw", filename))
    if args.gif:
        steps_per_frame = opts["steps"] // opts["frames"]
        frames = []
        for t in range(opts["frames"] + 1):
            gif_titles = ["original", "target"] + [f"{n} @{t * steps_per_frame}" for n in names]
            frames.append(image_grid([rows[t] for rows in gif_rows], gif_titles))
        save_gif(frames, os.path.join(args.output, "trajectory.gif"))
    meta = {k: v for k, v in opts.items()}
    meta.update(mode=args.mode, kind=kind, mask=args.mask, paint=args.paint, swap=args.swap,
                seed=args.seed, source=args.data or args.image,
                split=args.split if args.data else None)
    write_text(os.path.join(args.output, "metrics.json"), json.dumps(
        {"settings": meta, "checkpoints": dict(zip(names, args.checkpoint)),
         "summary": summary, "images": records}, indent=2))

    for name in ["start"] + names:
        s = summary[name]
        line = (f"{name}: PSNR {s['psnr']:.2f} dB (low-pass {s['psnr_lowpass']:.2f})  SSIM "
                f"{s['ssim']:.3f}  high-freq {s['high_frequency']:.3f}")
        if name != "start":
            line += (f"  hole acc {s['hole_accuracy_start']:.3f} -> {s['hole_accuracy']:.3f}"
                     f"  CE {s['ce_start']:.3f} -> {s['ce']:.3f}")
        print(line)
    print(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A synthesis session: inpaint, generate or edit images with one or more segmentation models,
side by side, with metrics and pictures. What `synthesize.py` does, without argparse:

    from jaxseg.synthesis.session import Request, synthesize
    synthesize(Request("inpaint", checkpoint=("ckpt/std", "ckpt/at"), name=("std", "AT"),
                       data="synthetic", index=(0, 1), mask="rect:30,30,36,36", output="out/inp"))

Field names follow synthesize.py's flags (`--checkpoint` -> checkpoint, repeated flags -> tuples).

Writes OUTPUT/grid.png (original | target | start | one result per model, a row per image),
OUTPUT/raw/*.png (every image at full resolution), OUTPUT/metrics.json (PSNR, SSIM, hole
accuracy, high-frequency ratio per image and model, and their means), and with --gif
OUTPUT/trajectory.gif. Every input is checked before any work; errors are one line, exit 2.
"""

import dataclasses
import os
import re
import sys

import jax
import numpy as np

from jaxseg import data, io, labels, models, runtime
from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError
from jaxseg.synthesis import edits as masks
from jaxseg.synthesis import objectives, quality
from jaxseg.synthesis import descent as synthesis
from jaxseg.viz import image_grid, save_gif

MODES = ("inpaint", "generate", "edit")
# Metrics of the pixels alone, also reported for the start (the mean fill) as a baseline.
PIXEL_METRICS = ("psnr", "psnr_lowpass", "ssim", "high_frequency", "high_frequency_original")


# ---------------------------------------------------------------------------------------------
# Inputs


def read_label(path, shape):
    label = io.read_label_values(path).astype(np.int64)
    if label.shape != shape:
        raise JaxsegError(f"{path}: label is {label.shape[1]}x{label.shape[0]}, its image "
                          f"{shape[1]}x{shape[0]}")
    return label


def load_examples(request, num_classes):
    """[(id, image uint8 [H,W,3], label [H,W])], class names, colorize."""
    if request.image and request.data:
        raise JaxsegError("give --image or --data, not both")
    if request.image:
        if request.index:
            raise JaxsegError("--index selects from --data; it does not apply to --image")
        if len(request.label) != len(request.image):
            raise JaxsegError(f"{len(request.image)} --image but {len(request.label)} --label: every "
                              "image needs its segmentation (the target y of eqs. 6 and 7)")
        examples = []
        for image_path, label_path in zip(request.image, request.label):
            image = io.read_image(image_path)
            label = read_label(label_path, image.shape[:2])
            stem = os.path.splitext(os.path.basename(image_path))[0]
            examples.append((stem, image, label))
        info = data.DatasetInfo("images", tuple(str(k) for k in range(num_classes)),
                                data.default_palette(num_classes))
        return examples, info
    if not request.data:
        raise JaxsegError("no input: give --image PATH --label PATH, or --data SPEC --index I")
    if request.label:
        raise JaxsegError("--label goes with --image; --data brings its own labels")
    dataset = data.get_dataset(request.data, request.split, **dict(request.data_kwargs))
    labels.check_num_classes(num_classes, dataset.info.num_classes, "the checkpoints",
                             f"data {request.data}")
    examples = []
    for index in request.index or [0]:
        if not 0 <= index < len(dataset):
            raise JaxsegError(f"--index {index} is out of range: {request.data} ({request.split}) has "
                              f"{len(dataset)} examples")
        item = dataset[index]
        examples.append((f"{index:05d}", item["image"], np.asarray(item["label"])))
    return examples, dataset.info


def load_models(request):
    names = list(request.name or [os.path.basename(os.path.normpath(c)) for c in request.checkpoint])
    if len(names) != len(request.checkpoint):
        raise JaxsegError(f"{len(names)} --name values for {len(request.checkpoint)} checkpoints")
    if len(set(names)) != len(names):
        raise JaxsegError(f"model names must differ, got {', '.join(names)} (use --name)")
    loaded = [models.load(path) for path in request.checkpoint]
    classes = {model.num_classes for model, _ in loaded}
    if len(classes) > 1:
        raise JaxsegError("the checkpoints predict different numbers of classes: "
                          f"{sorted(classes)}")
    return names, loaded, classes.pop()


# ---------------------------------------------------------------------------------------------
# Targets and holes


def target_and_hole(request, image, label, info, seed):
    """(target segmentation, hole mask, kind) for one example, or a one-line error."""
    height, width = label.shape
    spec = lambda s: masks.parse(s, height, width, label, info.class_names, seed)  # noqa: E731
    if request.mode == "generate":
        if request.mask:
            raise JaxsegError("generate synthesises the whole image; --mask does not apply")
        return label, np.ones_like(label, bool), "generate"
    if request.mode == "inpaint":
        if not request.mask:
            raise JaxsegError("inpaint needs --mask (rect:x,y,w,h, class:k, random:n, or a PNG)")
        return label, spec(request.mask), "inpaint"
    # edit
    if (request.paint is None) == (request.swap is None):
        raise JaxsegError("edit needs exactly one of --paint CLASS (with --mask) or --swap A:B")
    if request.paint is not None:
        if not request.mask:
            raise JaxsegError("--paint needs --mask: the region to paint the class into")
        region = spec(request.mask)
        target = masks.paint_class(label, region, masks.class_id(request.paint, info.class_names))
        hole = region
    else:
        if request.mask:
            raise JaxsegError("--swap edits every pixel of class A; --mask does not apply")
        a, sep, b = request.swap.partition(":")
        if not sep:
            raise JaxsegError(f"--swap {request.swap!r} must look like A:B (class ids or names)")
        a, b = masks.class_id(a, info.class_names), masks.class_id(b, info.class_names)
        if a == b:
            raise JaxsegError(f"--swap {request.swap!r}: the two classes are the same")
        if not (label == a).any():
            raise JaxsegError(f"--swap: class {info.class_names[a]!r} is not present in the image")
        target = masks.swap_class(label, a, b)
        hole = masks.changed(label, target)
    if request.method == "generate":
        return target, np.ones_like(label, bool), "generate"
    if hole.all():
        raise JaxsegError("the edit covers the whole image; use --method generate")
    return target, hole, "inpaint"


def settings(request, kind, shape):
    """Keyword arguments for `synthesis.run`, validated (all JSON-able)."""
    recipe = objectives.RECIPES[kind]
    steps = recipe["steps"] if request.steps is None else request.steps
    if steps < 1:
        raise JaxsegError(f"--steps must be >= 1, got {steps}")
    if request.step_size is None:
        step_size = objectives.default_step_size(kind, shape, request.rule)
    else:
        step_size = request.step_size
    lam = recipe["lam"] if request.lam is None else request.lam
    if request.radius is None:
        radius = None
    elif str(request.radius).strip().lower() == "santurkar":
        radius = objectives.default_radius(kind, shape)
    else:
        radius = request.radius
    if request.frames < 1:
        raise JaxsegError(f"--frames must be >= 1, got {request.frames}")
    frames = runtime.largest_divisor(steps, request.frames) if request.gif else 0
    options = dict(steps=steps, step_size=step_size, lam=lam, rule=request.rule, radius=radius,
                   penalty=request.penalty, jitter=request.jitter, bn=request.bn, frames=frames)
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


def synthesize_group(kind, opts, loaded, images, targets, holes, key, mesh, progress=None):
    """Per model: result images, start, frames, predictions and CE at the result."""
    (images, targets, holes), n = pad_batch([images, targets, holes], mesh.size)
    out = []
    for model, variables in loaded:
        result = synthesis.run(kind, model.apply, variables, images, targets, key,
                               mask=holes if kind == "inpaint" else None, mesh=mesh,
                               progress=progress, **opts)
        logits_fn = jax.jit(lambda v, x, m=model: m.apply(v, x)["out"])
        logits = logits_fn(variables, result.x)
        ce = np.asarray(losses.cross_entropy(logits, targets))
        frames = None if result.frames is None else np.asarray(result.frames)[:, :n]
        out.append({"x": np.asarray(result.x)[:n], "start": np.asarray(result.start)[:n],
                    "frames": frames, "pred": np.asarray(logits.argmax(-1))[:n],
                    "pred_start": np.asarray(logits_fn(variables, result.start).argmax(-1))[:n],
                    "ce_start": np.asarray(result.trace)[0, :n], "ce": ce[:n]})
    return out


def _progress(total, quiet):
    """Steps over all models and image groups, with ETA (stderr, process 0 only)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc="descent", dynamic_ncols=True, file=sys.stderr,
                disable=quiet or jax.process_index() != 0)


def pick_row(key, value, row):
    """Example `row` of one output (frames are [F + 1, N, ...]; the rest [N, ...])."""
    if value is None:
        return None
    return value[:, row] if key == "frames" else value[row]


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


@dataclasses.dataclass(frozen=True)
class Request:
    """One synthesis session. Input: `image` files with their `label` files, or `data` (a
    `jaxseg.data.get_dataset` spec) with `indices`. `mask`: a hole spec (`edits.parse`).
    edit: `paint` a class into `mask`, or `swap` 'A:B'; `method` re-inpaints the edited region
    or generates anew. Unset settings follow Santurkar's recipe scaled to the image; `radius`
    may be 'santurkar'. `frames`: GIF frames at most (with `gif`)."""

    mode: str
    checkpoint: tuple = ()
    output: str = ""
    name: tuple | None = None
    image: tuple = ()
    label: tuple = ()
    data: str | None = None
    split: str = "val"
    data_kwargs: tuple = ()  # (key, value) pairs
    index: tuple = ()
    mask: str | None = None
    paint: str | None = None
    swap: str | None = None
    method: str = "inpaint"
    steps: int | None = None
    step_size: float | None = None
    lam: float | None = None
    penalty: str = "mse"
    rule: str = "l2"
    radius: float | str | None = None
    jitter: float = 0.0
    bn: str = "running"
    seed: int = 0
    gif: bool = False
    frames: int = 24
    quiet: bool = False  # no progress bar


def synthesize(request, log=print):
    """Run `request` (a `Request`): every input is checked before any work, every file is
    written after all the work succeeded. Writes OUTPUT/grid.png (original | target | start |
    one result per model, a row per image), OUTPUT/raw/*.png, OUTPUT/metrics.json (PSNR, SSIM,
    hole accuracy, high-frequency ratio per image and model, and their means), and with `gif`
    OUTPUT/trajectory.gif. Returns the summary {model: mean metrics}."""
    if request.mode not in MODES:
        raise JaxsegError(f"unknown mode {request.mode!r}; choose one of {', '.join(MODES)}")
    if not request.checkpoint:
        raise JaxsegError("no checkpoint given")
    if not request.output:
        raise JaxsegError("no output directory given")
    if request.mode != "edit" and (request.paint or request.swap):
        raise JaxsegError(f"--paint / --swap belong to edit, not {request.mode}")
    if os.path.exists(request.output) and not os.path.isdir(request.output):
        raise JaxsegError(f"--output {request.output}: exists and is not a directory")
    names, loaded, num_classes = load_models(request)
    examples, info = load_examples(request, num_classes)

    # Everything is checked before any synthesis: targets, holes, sizes, settings.
    prepared = []
    for i, (example_id, image, label) in enumerate(examples):
        if label.shape != image.shape[:2]:
            raise JaxsegError(f"example {example_id}: label {label.shape} and image "
                              f"{image.shape[:2]} differ in size")
        target, hole, kind = target_and_hole(request, image, label, info, request.seed + i)
        pixels = image.astype(np.float32)[None] / 255.0
        try:
            synthesis.check_images(pixels, target[None], hole[None] if kind == "inpaint" else None,
                                   num_classes)
        except JaxsegError as err:
            raise JaxsegError(f"example {example_id}: {err}") from None
        prepared.append((example_id, pixels[0], label, target, hole, kind))
    kinds = {p[5] for p in prepared}
    kind = kinds.pop()
    opts = settings(request, kind, prepared[0][1].shape)

    # Same-size examples run as one batch (sharded over all devices).
    mesh = runtime.make_mesh()
    key = jax.random.key(request.seed)
    groups = {}
    for position, p in enumerate(prepared):
        groups.setdefault(p[1].shape, []).append(position)
    results = [None] * len(prepared)
    bar = _progress(opts["steps"] * len(loaded) * len(groups), request.quiet)
    for shape, members in groups.items():
        group_opts = dict(opts)
        if request.step_size is None:
            group_opts["step_size"] = objectives.default_step_size(kind, shape, request.rule)
        stack = lambda j: np.stack([prepared[m][j] for m in members])  # noqa: E731
        per_model = synthesize_group(kind, group_opts, loaded, stack(1), stack(3), stack(4),
                                     key, mesh, bar.update)
        for row, m in enumerate(members):
            results[m] = [{k: pick_row(k, v, row) for k, v in out.items()} for out in per_model]
    bar.close()

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
        if request.gif:
            steps = range(len(per_model[0]["frames"]))
            gif_rows.append([[image, info.colorize(target)] + [o["frames"][t] for o in per_model]
                             for t in steps])
    titles = ["original", "target", "start"] + names
    summary = {name: quality.summarize([r["models"][name] for r in records]) for name in names}
    summary["start"] = quality.summarize([r["start"] for r in records])

    os.makedirs(os.path.join(request.output, "raw"), exist_ok=True)
    io.save_png(image_grid(grid_rows, titles), os.path.join(request.output, "grid.png"))
    for filename, pixels in raw.items():
        io.save_png(pixels, os.path.join(request.output, "raw", filename))
    if request.gif:
        steps_per_frame = opts["steps"] // opts["frames"]
        frames = []
        for t in range(opts["frames"] + 1):
            gif_titles = ["original", "target"] + [f"{n} @{t * steps_per_frame}" for n in names]
            frames.append(image_grid([rows[t] for rows in gif_rows], gif_titles))
        save_gif(frames, os.path.join(request.output, "trajectory.gif"))
    meta = {k: v for k, v in opts.items()}
    meta.update(mode=request.mode, kind=kind, mask=request.mask, paint=request.paint,
                swap=request.swap, seed=request.seed, source=request.data or list(request.image),
                split=request.split if request.data else None)
    io.write_json(os.path.join(request.output, "metrics.json"),
                  {"settings": meta, "checkpoints": dict(zip(names, request.checkpoint)),
                   "summary": summary, "images": records})

    for name in ["start"] + names:
        s = summary[name]
        line = (f"{name}: PSNR {s['psnr']:.2f} dB (low-pass {s['psnr_lowpass']:.2f})  SSIM "
                f"{s['ssim']:.3f}  high-freq {s['high_frequency']:.3f}")
        if name != "start":
            line += (f"  hole acc {s['hole_accuracy_start']:.3f} -> {s['hole_accuracy']:.3f}"
                     f"  CE {s['ce_start']:.3f} -> {s['ce']:.3f}")
        log(line)
    log(f"results in {request.output}")
    return summary

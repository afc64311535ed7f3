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
import functools
import os
import re
import sys
from typing import NamedTuple

import jax
import numpy as np

from jaxseg import data, io, labels, models, runtime
from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError
from jaxseg.synthesis import alignment, objectives, quality
from jaxseg.synthesis import descent as synthesis
from jaxseg.synthesis import edits as masks
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


def example_sources(request, num_classes):
    """[(id, read)] with read() -> (image uint8 [H,W,3], label [H,W]), and the DatasetInfo.
    Nothing is read yet: in a multi-process job each process reads only its own examples."""
    if request.image and request.data:
        raise JaxsegError("give --image or --data, not both")
    if request.image:
        if request.index:
            raise JaxsegError("--index selects from --data; it does not apply to --image")
        if len(request.label) != len(request.image):
            raise JaxsegError(f"{len(request.image)} --image but {len(request.label)} --label: every "
                              "image needs its segmentation (the target y of eqs. 6 and 7)")

        def read_file(image_path, label_path):
            image = io.read_image(image_path)
            return image, read_label(label_path, image.shape[:2])

        sources = [(os.path.splitext(os.path.basename(image_path))[0],
                    functools.partial(read_file, image_path, label_path))
                   for image_path, label_path in zip(request.image, request.label)]
        info = data.DatasetInfo("images", tuple(str(k) for k in range(num_classes)),
                                data.default_palette(num_classes))
        return sources, info
    if not request.data:
        raise JaxsegError("no input: give --image PATH --label PATH, or --data SPEC --index I")
    if request.label:
        raise JaxsegError("--label goes with --image; --data brings its own labels")
    dataset = data.get_dataset(request.data, request.split, **dict(request.data_kwargs))
    labels.check_num_classes(num_classes, dataset.info.num_classes, "the checkpoints",
                             f"data {request.data}")

    def read_item(index):
        item = dataset[index]
        return item["image"], np.asarray(item["label"])

    sources = []
    for index in request.index or [0]:
        if not 0 <= index < len(dataset):
            raise JaxsegError(f"--index {index} is out of range: {request.data} ({request.split}) has "
                              f"{len(dataset)} examples")
        sources.append((f"{index:05d}", functools.partial(read_item, index)))
    return sources, dataset.info


def owned_positions(count):
    """The examples this process reads and feeds: a contiguous share of the `count` (all of
    them in a one-process job)."""
    share = -(-count // jax.process_count())
    return range(jax.process_index() * share, min(count, (jax.process_index() + 1) * share))


def kind_of(request):
    """'inpaint' or 'generate': what the descent does for this request."""
    generates = request.mode == "generate" or (request.mode == "edit"
                                               and request.method == "generate")
    return "generate" if generates else "inpaint"


def load_models(request):
    names = list(request.name or [os.path.basename(os.path.normpath(c)) for c in request.checkpoint])
    if len(names) != len(request.checkpoint):
        raise JaxsegError(f"{len(names)} --name values for {len(request.checkpoint)} checkpoints")
    if len(set(names)) != len(names):
        raise JaxsegError(f"model names must differ, got {', '.join(names)} (use --name)")
    loaded = [models.load(path, request.dtype, request.remat) for path in request.checkpoint]
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


class Example(NamedTuple):
    """One prepared input: pixels float32 [H,W,3] in [0, 1], target [H,W], hole bool [H,W]."""

    id: str
    pixels: np.ndarray
    target: np.ndarray
    hole: np.ndarray


def group_rows(members, examples, share, shape, local_devices):
    """This process's rows of one same-size group (`members`: positions of the examples), as
    (images, targets, holes): its own examples (`examples`: position -> Example, the ones
    this process read; a process owns positions [p * share, (p + 1) * share)), then copies of
    its last one, or blanks if it has none of the group, so that every process feeds the same
    number of rows, a multiple of its devices. Also {position: row of the global batch}."""
    owners = [m // share for m in members]
    per_process = max(owners.count(p) for p in range(jax.process_count()))
    rows = -(-per_process // local_devices) * local_devices
    placed, filled = {}, [0] * jax.process_count()
    for member, owner in zip(members, owners):
        placed[member] = owner * rows + filled[owner]
        filled[owner] += 1
    mine = [examples[m] for m in members if m in examples]
    if not mine:  # descents whose results nobody reads
        return (np.zeros((rows, *shape, 3), np.float32), np.zeros((rows, *shape), np.int32),
                np.ones((rows, *shape), bool)), placed
    mine += [mine[-1]] * (rows - len(mine))
    return (np.stack([e.pixels for e in mine]), np.stack([e.target for e in mine]),
            np.stack([e.hole for e in mine])), placed


@functools.partial(runtime.jit, static_argnums=0)
def _logits(model, variables, x):
    return model.apply(variables, x)["out"]


def synthesize_group(kind, opts, loaded, images, targets, holes, key, mesh, progress=None):
    """Per model: result images, start, frames, predictions and CE at the result, as numpy
    arrays over the global batch. images / targets / holes: this process's rows (all rows in
    a one-process job), as many on every process, a multiple of its devices."""
    global_targets = runtime.shard_batch(mesh, np.asarray(targets, np.int32))
    out = []
    for model, variables in loaded:
        variables = runtime.replicate(mesh, variables)
        result = synthesis.run(kind, model.apply, variables, images, targets, key,
                               mask=holes if kind == "inpaint" else None, mesh=mesh,
                               progress=progress, **opts)
        logits_fn = functools.partial(_logits, model)
        logits = logits_fn(variables, result.x)
        ce = losses.cross_entropy(logits, global_targets)
        host = runtime.to_host
        out.append({"x": host(result.x), "start": host(result.start),
                    "frames": None if result.frames is None else host(result.frames),
                    "pred": host(logits.argmax(-1)),
                    "pred_start": host(logits_fn(variables, result.start).argmax(-1)),
                    "ce_start": host(result.trace)[0], "ce": host(ce)})
    return out


def _progress(total, quiet):
    """Steps over all models and image groups, with ETA (stderr, process 0 only)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc="descent", dynamic_ncols=True, file=sys.stderr,
                disable=quiet or jax.process_index() != 0)


def _finite(value):
    return float(value) if np.isfinite(value) else None


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
    may be 'santurkar'. `frames`: GIF frames at most (with `gif`). `jitter` noise is drawn
    over the whole (padded) batch: another device count may draw other noise."""

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
    dtype: str = "auto"  # compute dtype (runtime.COMPUTE_DTYPES)
    remat: str = "none"  # per-block rematerialisation (models.REMAT_POLICIES)
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
    names, loaded, num_classes = runtime.on_every_process(lambda: load_models(request))
    sources, info = runtime.on_every_process(lambda: example_sources(request, num_classes))
    kind = kind_of(request)

    def prepare_mine():
        """Read and check this process's examples: targets, holes, sizes."""
        examples = {}
        for position in owned_positions(len(sources)):
            example_id, read = sources[position]
            image, label = read()
            if label.shape != image.shape[:2]:
                raise JaxsegError(f"example {example_id}: label {label.shape} and image "
                                  f"{image.shape[:2]} differ in size")
            target, hole, _ = target_and_hole(request, image, label, info,
                                              request.seed + position)
            pixels = image.astype(np.float32)[None] / 255.0
            try:
                synthesis.check_images(pixels, target[None],
                                       hole[None] if kind == "inpaint" else None, num_classes)
            except JaxsegError as err:
                raise JaxsegError(f"example {example_id}: {err}") from None
            examples[position] = Example(example_id, pixels[0], target.astype(np.int32),
                                         hole.astype(bool))
        return examples

    # Everything is checked before any synthesis, on every process.
    examples = runtime.on_every_process(prepare_mine)
    shapes = np.zeros((len(sources), 2), np.int32)
    for position, example in examples.items():
        shapes[position] = example.pixels.shape[:2]
    shapes = runtime.sum_over_processes(shapes)  # every example's size, known everywhere
    opts = settings(request, kind, (int(shapes[0][0]), int(shapes[0][1]), 3))

    # Same-size examples run as one batch, sharded over all devices of all processes.
    mesh = runtime.make_mesh()
    key = jax.random.key(request.seed)
    share = -(-len(sources) // jax.process_count())
    groups = {}
    for position, shape in enumerate(tuple(int(v) for v in hw) for hw in shapes):
        groups.setdefault(shape, []).append(position)
    results, inputs = [None] * len(sources), [None] * len(sources)
    bar = _progress(opts["steps"] * len(loaded) * len(groups), request.quiet)
    for shape, members in groups.items():
        group_opts = dict(opts)
        if request.step_size is None:
            group_opts["step_size"] = objectives.default_step_size(kind, (*shape, 3), request.rule)
        rows, placed = group_rows(members, examples, share, shape,
                                  runtime.local_device_count(mesh))
        per_model = synthesize_group(kind, group_opts, loaded, *rows, key, mesh, bar.update)
        every = runtime.all_rows(mesh, rows)  # the inputs of every process, for process 0
        for m in members:
            row = placed[m]
            results[m] = [{k: pick_row(k, v, row) for k, v in out.items()} for out in per_model]
            inputs[m] = Example(sources[m][0], *(r[row] for r in every))
    bar.close()
    if not runtime.is_main_process():
        return None

    # Metrics, then every file (nothing is written before all the work succeeded).
    records, grid_rows, raw, gif_rows = [], [], {}, []
    for (example_id, image, target, hole), per_model in zip(inputs, results):
        start = per_model[0]["start"]
        baseline = quality.report(start[None], image[None], hole[None],
                                  per_model[0]["pred_start"][None], target[None])[0]
        record = {"id": example_id, "hole_pixels": int(hole.sum()),
                  "start": {k: baseline[k] for k in PIXEL_METRICS}, "models": {}}
        if kind == "inpaint":  # the floor of the alignment measure: a random direction
            record["start"]["alignment"] = _finite(alignment.random_alignment(
                image[None], hole[None], jax.random.fold_in(key, len(records)))[0])
        for name, out, (model, variables) in zip(names, per_model, loaded):
            row = quality.report(out["x"][None], image[None], hole[None], out["pred"][None],
                                 target[None])[0]
            if kind == "inpaint":  # cos(first descent direction, original - start) in the hole
                row["alignment"] = _finite(alignment.inpainting_alignment(
                    model.apply, variables, image[None], target[None], hole[None],
                    opts["lam"], opts["penalty"], opts["bn"])[0])
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
        if s.get("alignment") is not None:  # for start: a random direction's (the floor)
            line += f"  alignment {s['alignment']:.3f}"
        if name != "start":
            line += (f"  hole acc {s['hole_accuracy_start']:.3f} -> {s['hole_accuracy']:.3f}"
                     f"  CE {s['ce_start']:.3f} -> {s['ce']:.3f}")
        log(line)
    log(f"results in {request.output}")
    return summary

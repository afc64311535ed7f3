"""The CamVid experiment (docs/RESULTS.md): standard vs PGD-AT FCN, robustness and synthesis.

    python -m jaxseg.cli.prepare camvid --download     # once: data/camvid, CamVid at 240x180
    python experiments/camvid.py                       # everything, in order (hours on 2 cores)
    python experiments/camvid.py --runs /scratch/runs  # workdirs elsewhere
    python experiments/camvid.py --smoke               # every step: 2 images, 2 steps each

Every step is one of the project's CLIs, printed before it runs, so each can be rerun by hand.
Training resumes from its workdir if interrupted and is skipped once complete; an evaluation or
synthesis whose results file exists is skipped too (delete its directory to redo it). Raw
outputs go to RUNS/results/ (not in git); the small ones are then published to --publish
(docs/results/camvid/): tables (markdown + JSON), the robustness curve, and the image grids as
JPEG (the PNG grids are megabytes of photographs), plus summary.md and timings.json.
--smoke checks a setup in minutes (the data, every command, the summary): its figures mean
nothing, so it works in RUNS/smoke/ (its 2-step checkpoints would otherwise stop a real run
from resuming there: a different configuration) and publishes to RUNS/smoke/published unless
--publish says otherwise.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "camvid:data/camvid"  # where `python -m jaxseg.cli.prepare camvid` puts it
PUBLISH = os.path.join("docs", "results", "camvid")
MODELS = ("standard", "at")
NAMES = {"standard": "standard", "at": "AT"}
EPS = "4/255"  # the training adversary's eps (configs/camvid_at.py)
CAR, CAR_PIXELS = 8, (800, 8000)  # whole-object holes: cars of 800-8000 px (of 43200)
EVALUATIONS = {  # name -> (eps, flags)
    # The training adversary: PGD-3 at the training eps, step 2.5 eps / 3, random start.
    "eval_train_adversary": (EPS, ["--attack", "pgd", "--steps", "3"]),
    # Stronger: 20 steps, best of 3 random restarts, on the CE and on the SegPGD loss.
    "eval_strong": (EPS, ["--attack", "pgd", "--attack", "segpgd", "--steps", "20",
                          "--restarts", "3"]),
    # Robust accuracy vs eps (PGD-10).
    "eval_curve": (EPS, ["--steps", "10", "--eps-curve", "0,1/255,2/255,4/255,8/255,16/255"]),
    # The Segmentation Ensemble Attack (red-eps APGD on JS, masked CE, balanced masked CE), 50
    # steps per loss instead of the default 300 to fit the CPU (150 per image in all).
    "eval_sea_4": ("4/255", ["--attack", "sea", "--steps", "50"]),
    "eval_sea_8": ("8/255", ["--attack", "sea", "--steps", "50"]),
}
# Synthesis settings (one for both models), chosen on 4 val images before the final runs: 60
# L2 steps, larger than Santurkar's scaled step (which barely moves a 180x240 image in 60 steps),
# and a penalty weight that holds the known pixels (lam 10 lets the whole image drift).
INPAINT = ["--steps", "60", "--step-size", "3.0", "--lambda", "1000"]
GENERATE = ["--steps", "60", "--step-size", "5.0"]
# Runs of 60 steps (x restarts) compile unrolled: 3.7x faster per step on XLA:CPU than the
# backend default (rolled past 32 steps); see jaxseg/runtime/loops.py and docs/performance.md.
UNROLLED = {"eval_strong", "inpaint_boxes", "inpaint_cars", "generate"}
SPREAD = list(range(0, 96, 12))  # 8 val images from across the sequence
SYNTHESES = ("inpaint_boxes", "inpaint_cars", "generate", "inpaint_cars_recipe")


def run(command, timings, label, done=None):
    prefix = "JAXSEG_UNROLL=on " if label in UNROLLED else ""
    print("\n$ " + prefix + " ".join(shlex.quote(c) for c in command), flush=True)
    if done and os.path.exists(done):
        print(f"  (skipped: {done} exists)", flush=True)
        return
    start = time.time()
    env = dict(os.environ, JAXSEG_UNROLL="on") if label in UNROLLED else None
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(result.returncode)
    timings[label] = round(time.time() - start, 1)
    print(f"  ({timings[label]:.0f} s)", flush=True)


def car_images(data, count=8):
    """`count` val images of `data`, spread over the sequence, whose car pixels are within
    CAR_PIXELS."""
    import numpy as np

    from jaxseg.data import get_dataset
    dataset = get_dataset(data, split="val")
    found = [i for i in range(len(dataset))
             if CAR_PIXELS[0] <= np.sum(np.asarray(dataset[i]["label"]) == CAR) <= CAR_PIXELS[1]]
    stride = max(1, len(found) // count)
    return found[::stride][:count]


# --smoke: the same commands on a few images, with the smallest model, evaluation at a quarter
# of the size (60x80) and every budget cut to the fewest steps an attack takes (SEA's
# reduced-eps schedule needs 3).
SMOKE_TRAIN = ["--config.steps=2", "--config.batch_size=2", "--config.data.crop_size=(64,64)",
               "--config.model.arch=fcn_resnet14_w8", "--config.eval.num_images=2",
               "--config.eval.steps=1", "--config.eval.samples=0", "--config.adv.steps=1",
               "--config.checkpoint.every=2", "--config.data.eval_short_side=60"]
SMOKE_EVAL = ["--num-images", "2", "--batch-size", "2", "--steps", "3", "--restarts", "1",
              "--short-side", "60"]
SMOKE_SYNTH = ["--steps", "2"]
SMOKE_IMAGES = 2


def smoke_train(config):
    """SMOKE_TRAIN for the training config file `config`: the smallest model of its family."""
    from jaxseg.config import load

    family = load(config).model.arch.split("_")[0]
    smallest = {"fcn": "fcn_resnet14_w8", "deeplabv3": "deeplabv3_resnet14_w8"}[family]
    return [f"--config.model.arch={smallest}" if flag.startswith("--config.model.arch=")
            else flag for flag in SMOKE_TRAIN]


def cut_budget(flags, smoke=True):
    """`flags` with the budget flags dropped (their values too) for a smoke run."""
    if not smoke:
        return flags
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in ("--steps", "--restarts", "--eps-curve"):
            skip = True
            if flag == "--eps-curve":
                kept += ["--eps-curve", "0,4/255"]
        else:
            kept.append(flag)
    return kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA,
                        help="the prepared CamVid copy (default: %(default)s)")
    parser.add_argument("--runs", default="workdirs", help="where the workdirs and raw outputs go")
    parser.add_argument("--publish", default=None,
                        help=f"where the tables and grids go (default: {PUBLISH}; with --smoke "
                        "RUNS/smoke/published)")
    parser.add_argument("--smoke", action="store_true",
                        help="every step on 2 images with 1-2 steps each: checks the setup")
    args = parser.parse_args()
    os.chdir(ROOT)
    smoke = args.smoke
    runs = os.path.join(args.runs, "smoke") if smoke else args.runs
    publish_to = args.publish or (os.path.join(runs, "published") if smoke else PUBLISH)
    check_data(args.data)
    old = os.path.join(publish_to, "timings.json")
    timings = json.load(open(old)) if os.path.exists(old) else {}
    cars = car_images(args.data, SMOKE_IMAGES if smoke else 8)
    for label, argv, done in commands(args.data, runs, cars, smoke):
        run(argv, timings, label, done)
    results = os.path.join(runs, "results")
    publish(results, timings, publish_to)


def commands(data_spec, runs, cars, smoke=False):
    """Every CLI call of the experiment, in order, as (label, argv after `python`, the file
    whose existence means the call is done, or None). `cars`: the val images of the car holes."""
    data = ["--data", data_spec, "--split", "val"]
    results = os.path.join(runs, "results")
    workdirs = {m: os.path.join(runs, f"camvid_{m}") for m in MODELS}
    calls = [(f"train_{m} (this call; a resumed run counts only its last part)",
              ["train.py", "--config", f"configs/camvid_{m}.py", "--workdir", workdirs[m],
               *([f"--config.data.train={data_spec}"] if data_spec != DATA else []),
               *(SMOKE_TRAIN if smoke else [])], None)
             for m in MODELS]
    checkpoints = [a for m in MODELS for a in ("--checkpoint", workdirs[m], "--name", NAMES[m])]
    for name, (eps, extra) in EVALUATIONS.items():
        out = os.path.join(results, name)
        calls.append((name, ["evaluate.py", *checkpoints, *data, "--eps", eps,
                             *cut_budget(extra, smoke), *(SMOKE_EVAL if smoke else []),
                             "--output", out], os.path.join(out, "results.json")))
    index = lambda ids: [a for i in ids for a in ("--index", str(i))]  # noqa: E731
    spread = SPREAD[:1] if smoke else SPREAD
    synth = {
        "inpaint_boxes": ["inpaint", *index(spread), "--mask", "random:2", *INPAINT],
        "inpaint_cars": ["inpaint", *index(cars), "--mask", f"class:{CAR}", *INPAINT],
        "generate": ["generate", *index(spread), *GENERATE],
        # Santurkar's recipe as published (720 steps, lam 10, step 0.1 scaled to the image).
        "inpaint_cars_recipe": ["inpaint", *index(cars), "--mask", f"class:{CAR}"],
    }
    for name, extra in synth.items():
        out = os.path.join(results, name)
        calls.append((name, ["synthesize.py", extra[0], *checkpoints, *data,
                             *cut_budget(extra[1:], smoke), *(SMOKE_SYNTH if smoke else []),
                             "--output", out], os.path.join(out, "metrics.json")))
    return calls


def check_data(spec):
    """Stop with one line, before any work, when the CamVid copy is missing."""
    from jaxseg.data import get_dataset
    from jaxseg.errors import JaxsegError

    try:
        get_dataset(spec, split="val")
    except JaxsegError as err:
        sys.exit(f"error: {err}; fetch CamVid first: python -m jaxseg.cli.prepare camvid "
                 "--download (or pass --data camvid:PATH)")


def publish(results, timings, where=PUBLISH):
    """Copy the small outputs into `where` and write summary.md from them."""
    from PIL import Image

    os.makedirs(where, exist_ok=True)
    for name in EVALUATIONS:
        for filename in ("results.md", "results.json", "curve.json", "curve.png"):
            source = os.path.join(results, name, filename)
            if os.path.exists(source):
                shutil.copy(source, os.path.join(where, f"{name}_{filename}"))
    for name in SYNTHESES:
        shutil.copy(os.path.join(results, name, "metrics.json"),
                    os.path.join(where, f"{name}_metrics.json"))
        grid = Image.open(os.path.join(results, name, "grid.png")).convert("RGB")
        grid.save(os.path.join(where, f"{name}_grid.jpg"), quality=90)
    with open(os.path.join(where, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    text = summary(where)
    with open(os.path.join(where, "summary.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"published to {where}/")


def summary(directory=PUBLISH):
    """Table-1 style markdown from the published JSON files in `directory`."""
    load = lambda name: json.load(open(os.path.join(directory, name)))  # noqa: E731
    train = load("eval_train_adversary_results.json")["results"]
    strong = load("eval_strong_results.json")["results"]
    curve = load("eval_curve_curve.json")["curves"]
    pct = lambda s: f"{100 * s['pixel_acc']:.1f} / {100 * s['miou']:.1f}"  # noqa: E731
    at_eps = lambda name: next(p for p in curve[name] if abs(p["eps"] - 4 / 255) < 1e-9)  # noqa: E731
    sea = {e: load(f"eval_sea_{e}_results.json")["results"] for e in (4, 8)
           if os.path.exists(os.path.join(directory, f"eval_sea_{e}_results.json"))}
    lines = ["| model | clean | PGD-3 (training adversary) | PGD-10 | PGD-20 x3 restarts | "
             "SegPGD-20 x3 restarts |" + "".join(f" SEA 3x50 at {e}/255 |" for e in sea),
             "|---|---|---|---|---|---|" + "---|" * len(sea)]
    for m in MODELS:
        n = NAMES[m]
        lines.append(f"| {n} | {pct(train[n]['clean'])} | {pct(train[n]['pgd'])} | "
                     f"{pct(at_eps(n))} | {pct(strong[n]['pgd'])} | {pct(strong[n]['segpgd'])} |"
                     + "".join(f" {pct(sea[e][n]['sea'])} |" for e in sea))
    images = load("eval_train_adversary_results.json")["images"]
    lines += ["", f"Pixel accuracy / mIoU (%), CamVid val ({images} images), L-inf eps 4/255.",
              "", "| eps (PGD-10) | " + " | ".join(NAMES[m] for m in MODELS) + " |",
              "|---|" + "---|" * len(MODELS)]
    for i, point in enumerate(curve[NAMES[MODELS[0]]]):
        cells = [pct(curve[NAMES[m]][i]) for m in MODELS]
        lines.append(f"| {255 * point['eps']:.0f}/255 | " + " | ".join(cells) + " |")
    lines += ["", "| synthesis | model | PSNR | low-pass PSNR | SSIM | hole acc | HF ratio |",
              "|---|---|---|---|---|---|---|"]
    for name in SYNTHESES:
        s = load(f"{name}_metrics.json")["summary"]
        for m in ["start"] + [NAMES[m] for m in MODELS]:
            q = s[m]
            acc = "-" if m == "start" else f"{100 * q['hole_accuracy']:.1f}"
            lines.append(f"| {name} | {m} | {q['psnr']:.2f} | {q['psnr_lowpass']:.2f} | "
                         f"{q['ssim']:.3f} | {acc} | {q['high_frequency']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

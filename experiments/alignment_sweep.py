"""The perceptual-alignment sweep (docs/RESULTS.md, "Alignment against robustness"): the CamVid
FCN of experiments/camvid.py trained standard and adversarially at three Linf and three L2
budgets, each model's clean and SEA-robust accuracy, and how well its gradients inpaint.

    python experiments/alignment_sweep.py                   # everything, in order
    python experiments/alignment_sweep.py --stage train --stage evaluate --jobs 7   # a GPU
    python experiments/alignment_sweep.py --stage synthesize --stage publish        # then here
    python experiments/alignment_sweep.py --steps 500       # every model's schedule shortened alike
    python experiments/alignment_sweep.py --smoke           # every step at the smallest size

Every step is one of the project's CLIs, printed before it runs, so each can be rerun by hand;
with --jobs N, independent steps of a stage run N at a time (at most one per CPU core).
Workdirs go to RUNS/sweep_MODEL/, raw outputs to RUNS/alignment_sweep/ (each step's output in
its logs/, wall times with the machine and its load in its timings.json). Training resumes from its workdir; an evaluation or
synthesis whose result file exists is skipped (delete its directory to redo it). `publish`
writes docs/results/alignment_sweep/. --smoke runs every step in RUNS/smoke/ on 2 images with
the smallest model and 1-3 steps each, and publishes there: a check of the setup in minutes.

L2 budgets: per image at the 160x160 training crops. They are chosen to span the Linf range by
RobustBench's pairing of Linf 8/255 with L2 0.5 on 32x32 CIFAR images, scaled by the square
root of the pixel count (L2 ~ 0.29 sqrt(d) eps_inf, d = 160 * 160 * 3): L2 0.5, 1.0, 2.0 pair
with Linf ~1.6/255, 3.2/255, 6.3/255.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import camvid  # noqa: E402  (the CamVid study: data, car holes, synthesis settings)
from bench.common import machine as cpu_and_load  # noqa: E402

ROOT = camvid.ROOT
PUBLISH = os.path.join("docs", "results", "alignment_sweep")
AT = ["--config", "configs/camvid_at.py"]
# name -> (training flags, evaluation ball (norm, eps) at the training budget, or None)
MODELS = {
    "standard": (["--config", "configs/camvid_standard.py"], None),
    "Linf-2": (AT + ["--config.adv.eps=2/255"], ("linf", "2/255")),
    "Linf-4": (AT, ("linf", "4/255")),
    "Linf-8": (AT + ["--config.adv.eps=8/255"], ("linf", "8/255")),
    **{f"L2-{eps}": (AT + ["--config.adv.attack=pgd_l2", f"--config.adv.eps={eps}",
                           "--config.eval.attack=pgd_l2"], ("l2", eps))
       for eps in ("0.5", "1.0", "2.0")},
}
COMMON = ("linf", "4/255")  # the one budget every model is also evaluated at
STAGES = ("train", "evaluate", "synthesize", "publish")
# --smoke: camvid.py's smoke sizes (2 images at 60x80, 2 training steps, the smallest models);
# SEA's reduced-eps schedule needs 3 iterations.
SMOKE_SEA_STEPS, SMOKE_SHORT_SIDE = 3, "60"


def machine():
    """CPU model, cores and load, and the accelerator where nvidia-smi finds one."""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = ""
    return cpu_and_load() + (f", {gpu}" if gpu else "")


def run_all(commands, jobs, results, timings):
    """Run [(label, argv, done-file or None)], `jobs` at a time, each one's output in
    RESULTS/logs/LABEL.log; stop at the first failure after the running ones finish."""
    pending = []
    for label, argv, done in commands:
        print("\n$ " + " ".join(shlex.quote(c) for c in argv), flush=True)
        if done and os.path.exists(done):
            print(f"  (skipped: {done} exists)", flush=True)
        else:
            pending.append((label, argv))
    os.makedirs(os.path.join(results, "logs"), exist_ok=True)
    jobs = max(1, min(jobs, len(os.sched_getaffinity(0))))  # more processes than cores thrash
    env = dict(os.environ)
    if jobs > 1:  # several processes share one accelerator's memory (ignored on CPU)
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{min(0.75, 0.9 / jobs):.2f}")
    running, failed = {}, []
    while pending or running:
        while pending and len(running) < jobs and not failed:
            label, argv = pending.pop(0)
            log = open(os.path.join(results, "logs", f"{label}.log"), "w")
            process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
            running[process] = (label, log, time.time(), os.getloadavg()[0])
        if failed and not running:
            break
        for process in [p for p in running if p.poll() is not None]:
            label, log, start, load = running.pop(process)
            log.close()
            seconds = round(time.time() - start, 1)
            if process.returncode:
                failed.append(label)
                print(f"  FAILED: {label} (exit {process.returncode}; "
                      f"{os.path.join(results, 'logs', label + '.log')})", flush=True)
                continue
            timings[label] = {"seconds": seconds, "load": [round(load, 2),
                                                           round(os.getloadavg()[0], 2)],
                              "jobs": jobs, "machine": machine()}  # load: 1-min, start and end
            print(f"  done: {label} ({seconds:.0f} s)", flush=True)
        time.sleep(0.5)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


def train_commands(runs, data, steps, models=MODELS, smoke=False):
    extra = [f"--config.data.train={data}"] + ([f"--config.steps={steps}"] if steps else [])
    return [(f"train_{name}", ["train.py", *flags, "--workdir", workdir(runs, name), *extra,
                               *(camvid.smoke_train(flags[1]) if smoke else [])], None)
            for name, (flags, _) in models.items()]


def workdir(runs, name):
    return os.path.join(runs, f"sweep_{name}")


def evaluate_commands(runs, results, data, sea_steps, images=None, models=MODELS, smoke=False):
    """SEA per model at its training budget and at the common one; one process each, so that
    --jobs runs them side by side."""
    if smoke:
        sea_steps, images = SMOKE_SEA_STEPS, camvid.SMOKE_IMAGES
    common = ["--data", data, "--split", "val", "--attack", "sea", "--steps", str(sea_steps),
              "--quiet"] + (["--num-images", str(images)] if images else []) + (
              ["--batch-size", str(images), "--short-side", SMOKE_SHORT_SIDE] if smoke else [])
    commands = []
    for name, (_, budget) in models.items():
        for label, ball in (("sea_common", COMMON), ("sea_own", budget)):
            if ball is None or (label == "sea_own" and ball == COMMON):
                continue
            out = os.path.join(results, f"{label}_{name}")
            commands.append((f"{label}_{name}", [
                "evaluate.py", "--checkpoint", workdir(runs, name), "--name", name, *common,
                "--norm", ball[0], "--eps", ball[1], "--output", out],
                os.path.join(out, "results.json")))
    return commands


def synthesis_commands(runs, results, data, models=MODELS, smoke=False):
    every = [a for name in models for a in ("--checkpoint", workdir(runs, name), "--name", name)]
    index = lambda ids: [a for i in ids for a in ("--index", str(i))]  # noqa: E731
    source = ["--data", data, "--split", "val"]
    cars = camvid.car_images(data, camvid.SMOKE_IMAGES if smoke else 8)
    spread = camvid.SPREAD[:1] if smoke else camvid.SPREAD

    def budget(flags):
        return camvid.cut_budget(flags) + camvid.SMOKE_SYNTH if smoke else flags

    inpaint = os.path.join(results, "inpaint_cars")
    generate = os.path.join(results, "generate")
    return [
        ("inpaint_cars", ["synthesize.py", "inpaint", *every, *source, *index(cars), "--mask",
                          f"class:{camvid.CAR}", *budget(camvid.INPAINT), "--output", inpaint],
         os.path.join(inpaint, "metrics.json")),
        ("generate", ["synthesize.py", "generate", *every, *source, *index(spread),
                      *budget(camvid.GENERATE), "--output", generate],
         os.path.join(generate, "metrics.json")),
    ]


def driver_parser(description):
    """The flags every staged CamVid driver takes: --runs, --data, --stage, --smoke."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--runs", default="workdirs", help="where the workdirs and raw outputs go")
    parser.add_argument("--data", default=camvid.DATA,
                        help="the prepared CamVid copy (default: %(default)s)")
    parser.add_argument("--stage", action="append", choices=STAGES,
                        help="run only these stages (repeatable; default: all, in order)")
    parser.add_argument("--smoke", action="store_true",
                        help="every step of every model at the smallest size (2 images, 1-3 "
                        "steps each, the smallest model of each family), in RUNS/smoke/, "
                        "published there too: checks a setup; its figures mean nothing")
    return parser


def drive(name, args, models, publish, *, steps=None, sea_steps=100, images=None, jobs=1):
    """Run the stages of a staged driver called `name` (the folder of its raw outputs under
    RUNS, with its logs and timings.json): `publish(results, timings, where)` writes the tables,
    into `where` (None: the driver's docs/results folder)."""
    os.chdir(ROOT)
    camvid.check_data(args.data)
    runs = os.path.join(args.runs, "smoke") if args.smoke else args.runs
    results = os.path.join(runs, name)
    stages = args.stage or STAGES
    path = os.path.join(results, "timings.json")
    timings = json.load(open(path)) if os.path.exists(path) else {}

    def stage(commands):
        try:
            run_all(commands, jobs, results, timings)
        finally:
            os.makedirs(results, exist_ok=True)
            with open(path, "w") as f:
                json.dump(timings, f, indent=2)

    if "train" in stages:
        stage(train_commands(runs, args.data, steps, models, args.smoke))
    if "evaluate" in stages:
        stage(evaluate_commands(runs, results, args.data, sea_steps, images, models, args.smoke))
    if "synthesize" in stages:
        stage(synthesis_commands(runs, results, args.data, models, args.smoke))
    if "publish" in stages:
        publish(results, timings, os.path.join(results, "published") if args.smoke else None)


def main():
    parser = driver_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=1, help="independent steps run at once")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of every model (default: the configs' 2000)")
    parser.add_argument("--sea-steps", type=int, default=100, help="SEA iterations per loss")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="evaluate the first N val images only (a quick look)")
    args = parser.parse_args()
    drive("alignment_sweep", args, MODELS, publish, steps=args.steps, sea_steps=args.sea_steps,
          images=args.eval_images, jobs=args.jobs)


def budget_text(budget):
    if budget is None:
        return "-"
    norm, eps = budget
    return f"Linf {eps}" if norm == "linf" else f"L2 {eps}"


def collect(results, models=MODELS):
    """{model: row} from the raw results: clean and SEA (own budget, common budget) accuracy
    and mIoU, and the inpainting metrics (alignment first)."""
    load = lambda *parts: json.load(open(os.path.join(results, *parts)))  # noqa: E731
    metrics = load("inpaint_cars", "metrics.json")
    inpaint, images = metrics["summary"], metrics["images"]
    rows = {}
    for name, (_, budget) in models.items():
        common = load(f"sea_common_{name}", "results.json")["results"][name]
        if budget is None:
            own = None
        elif budget == COMMON:
            own = common["sea"]
        else:
            own_rows = load(f"sea_own_{name}", "results.json")["results"][name]
            own = own_rows["sea" if budget[0] == "linf" else "sea-l2"]
        score = lambda s: None if s is None else {"pixel_acc": s["pixel_acc"],  # noqa: E731
                                                  "miou": s["miou"]}
        fill = inpaint[name]
        per_hole = [image["models"][name]["alignment"] for image in images]
        rows[name] = {
            "budget": budget_text(budget), "clean": score(common["clean"]),
            "sea_own": score(own), "sea_common": score(common["sea"]),
            **{k: fill[k] for k in ("alignment", "psnr", "psnr_lowpass", "ssim", "hole_accuracy")},
            "alignment_per_hole": per_hole,
            "alignment_se": statistics.stdev(per_hole) / len(per_hole) ** 0.5
            if len(per_hole) > 1 else 0.0,
            "high_frequency_ratio": fill["high_frequency"] / fill["high_frequency_original"],
            "fill_steps": metrics["settings"]["steps"],
        }
    return rows, inpaint["start"]["alignment"]


def fill_protocol(rows):
    """(car holes, descent steps) of the inpainting the rows were measured on."""
    row = next(iter(rows.values()))
    return len(row["alignment_per_hole"]), row["fill_steps"]


def summary(rows, floor):
    """The markdown table of the sweep."""
    def pct(s):
        return "-" if s is None else f"{100 * s['pixel_acc']:.1f} / {100 * s['miou']:.1f}"

    lines = [f"| model | training budget | clean | SEA at the training budget | SEA at "
             f"{budget_text(COMMON)} | alignment | PSNR | low-pass PSNR | SSIM | HF ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['budget']} | {pct(r['clean'])} | {pct(r['sea_own'])} | "
                     f"{pct(r['sea_common'])} | {r['alignment']:.3f} ± {r['alignment_se']:.3f} | "
                     f"{r['psnr']:.2f} | {r['psnr_lowpass']:.2f} | {r['ssim']:.3f} | "
                     f"{r['high_frequency_ratio']:.3f} |")
    holes, steps = fill_protocol(rows)
    lines += ["", "Pixel accuracy / mIoU (%), CamVid val. Alignment: cosine between the first "
              f"descent direction and (original - start) in {holes} car holes, mean ± standard "
              f"error over the holes; a random direction scores {floor:.3f}. Fill metrics after "
              f"the {steps}-step descent. HF ratio: the fill's high-frequency energy over the "
              "original's."]
    return "\n".join(lines) + "\n"


def scatter(rows, floor, path):
    """Robust mIoU at the common budget against alignment, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4), dpi=120)
    for name, r in rows.items():
        family = name.split("-")[0]
        marker = {"standard": "s", "Linf": "o", "L2": "^"}[family]
        x, y = r["alignment"], 100 * r["sea_common"]["miou"]
        color = {"standard": "k", "Linf": "C0", "L2": "C3"}[family]
        axis.errorbar([x], [y], xerr=[r["alignment_se"]], marker=marker, color=color,
                      capsize=2, linewidth=0.8)
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.axvline(floor, color="grey", linestyle=":", label="random direction")
    axis.set_xlabel("alignment (cosine, car holes)")
    axis.set_ylabel(f"SEA mIoU at {budget_text(COMMON)} (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def publish(results, timings, where=None):
    """Copy the small outputs of `results` into `where` (default: docs/results/alignment_sweep)
    and write the table and plot."""
    where = where or PUBLISH
    os.makedirs(where, exist_ok=True)
    rows, floor = collect(results)
    with open(os.path.join(where, "sweep.json"), "w") as f:
        json.dump({"models": rows, "random_alignment": floor,
                   "common_budget": budget_text(COMMON)}, f, indent=2)
    text = summary(rows, floor)
    with open(os.path.join(where, "summary.md"), "w") as f:
        f.write(text)
    scatter(rows, floor, os.path.join(where, "alignment_vs_robustness.png"))
    copy_outputs(results, where, timings, quality=80)  # 7 models: keep the grids small
    print("\n" + text)
    print(f"published to {where}/")


def copy_outputs(results, where, timings, quality):
    """The synthesis metrics, the grids as JPEG and the timings, into `where`."""
    import shutil

    from PIL import Image

    for name in ("inpaint_cars", "generate"):
        shutil.copy(os.path.join(results, name, "metrics.json"),
                    os.path.join(where, f"{name}_metrics.json"))
        grid = Image.open(os.path.join(results, name, "grid.png")).convert("RGB")
        grid.save(os.path.join(where, f"{name}_grid.jpg"), quality=quality)
    with open(os.path.join(where, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)


if __name__ == "__main__":
    main()

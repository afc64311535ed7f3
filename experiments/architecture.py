"""FCN against DeepLabV3 on CamVid (docs/RESULTS.md, "Does the architecture matter?"): the small
DeepLabV3 trained standard and with PGD-AT at Linf 4/255 exactly like the FCN pair of
experiments/alignment_sweep.py (same backbone, data, budget, schedule), then measured by the
sweep's protocol (clean and SEA mIoU at Linf 4/255, alignment and the 60-step fill on the 8 car
holes), and published next to the sweep's FCN rows.

    python experiments/architecture.py                    # train, evaluate, synthesize, publish
    python experiments/architecture.py --sea-steps 50     # SEA 3 x 50 (the 2-core CPU run)
    python experiments/architecture.py --stage publish    # the table again from RUNS/results

Every step is one of the project's CLIs, printed before it runs (the sweep's driver runs them);
training resumes from its workdir and a finished evaluation or synthesis is skipped. Outputs:
docs/results/architecture/ (summary.md, comparison.json, grids, timings with machine and load).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import alignment_sweep as sweep  # noqa: E402  (its commands, driver and row collection)
import camvid  # noqa: E402

PUBLISH = os.path.join("docs", "results", "architecture")
SWEEP = os.path.join(sweep.PUBLISH, "sweep.json")
MODELS = {  # name -> (training flags, the ball it was trained at), as in the sweep
    "DeepLabV3-standard": (["--config", "configs/camvid_deeplabv3_standard.py"], None),
    "DeepLabV3-Linf-4": (["--config", "configs/camvid_deeplabv3_at.py"], sweep.COMMON),
}
FCN = {"FCN-standard": "standard", "FCN-Linf-4": "Linf-4"}  # our row name -> the sweep's
STAGES = sweep.STAGES


def main():
    parser = sweep.driver_parser(__doc__)
    parser.add_argument("--sea-steps", type=int, default=100,
                        help="SEA iterations per loss (the sweep's FCN rows used 100)")
    args = parser.parse_args()
    os.chdir(camvid.ROOT)
    stages = args.stage or STAGES
    path = os.path.join(args.runs, "timings.json")
    timings = json.load(open(path)) if os.path.exists(path) else {}

    def stage(commands):
        try:
            sweep.run_all(commands, 1, args.runs, timings)
        finally:
            os.makedirs(args.runs, exist_ok=True)
            with open(path, "w") as f:
                json.dump(timings, f, indent=2)

    if "train" in stages:
        stage(sweep.train_commands(args.runs, args.data, None, MODELS))
    if "evaluate" in stages:
        stage(sweep.evaluate_commands(args.runs, args.data, args.sea_steps, models=MODELS))
    if "synthesize" in stages:
        stage(sweep.synthesis_commands(args.runs, args.data, MODELS))
    if "publish" in stages:
        publish(args.runs, timings, args.sea_steps)


def rows(results, sweep_rows):
    """{name: row}: the sweep's two FCN rows, then this run's DeepLabV3 rows (same fields)."""
    ours, floor = sweep.collect(results, MODELS)
    combined = {name: {"architecture": "FCN", **sweep_rows[source]}
                for name, source in FCN.items()}
    combined.update({name: {"architecture": "DeepLabV3", **row} for name, row in ours.items()})
    return combined, floor


def summary(rows, floor, sea_steps):
    """The markdown table: one row per model, the robustness and alignment columns."""
    def pct(s):
        return f"{100 * s['pixel_acc']:.1f} / {100 * s['miou']:.1f}"

    lines = ["| model | architecture | clean | SEA at Linf 4/255 | SEA iterations per loss | "
             "alignment | PSNR | low-pass PSNR | SSIM | HF ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        steps = 100 if r["architecture"] == "FCN" else sea_steps
        lines.append(f"| {name} | {r['architecture']} | {pct(r['clean'])} | "
                     f"{pct(r['sea_common'])} | {steps} | {r['alignment']:.3f} ± "
                     f"{r['alignment_se']:.3f} | {r['psnr']:.2f} | {r['psnr_lowpass']:.2f} | "
                     f"{r['ssim']:.3f} | {r['high_frequency_ratio']:.3f} |")
    lines += ["", "Pixel accuracy / mIoU (%), CamVid val (101 images). FCN rows: "
              "docs/results/alignment_sweep (fcn_resnet26_w16); DeepLabV3 rows: this run "
              "(deeplabv3_resnet26_w16, the same backbone). Alignment: cosine between the first "
              "descent direction and (original - start) in 8 car holes, mean ± standard error; "
              f"a random direction scores {floor:.3f}. Fill metrics after the 60-step descent."]
    return "\n".join(lines) + "\n"


def publish(runs, timings, sea_steps, where=PUBLISH, sweep_file=SWEEP):
    """This run's rows beside the sweep's FCN rows: summary.md, comparison.json, grids."""
    results = os.path.join(runs, "results")
    with open(sweep_file) as f:
        table, floor = rows(results, json.load(f)["models"])
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, "comparison.json"), "w") as f:
        json.dump({"models": table, "random_alignment": floor, "sea_steps": sea_steps,
                   "fcn_source": sweep_file}, f, indent=2)
    text = summary(table, floor, sea_steps)
    with open(os.path.join(where, "summary.md"), "w") as f:
        f.write(text)
    sweep.copy_outputs(results, where, timings, quality=85)
    print("\n" + text)
    print(f"published to {where}/")


if __name__ == "__main__":
    main()

"""FCN against DeepLabV3 on CamVid (docs/RESULTS.md, "Does the architecture matter?"): the small
DeepLabV3 trained standard and with PGD-AT at Linf 4/255 exactly like the FCN pair of
experiments/alignment_sweep.py (same backbone, data, budget, schedule), then measured by the
sweep's protocol (clean and SEA mIoU at Linf 4/255, alignment and the 60-step fill on the 8 car
holes), and published next to the sweep's FCN rows.

    python experiments/architecture.py                    # train, evaluate, synthesize, publish
    python experiments/architecture.py --sea-steps 50     # SEA 3 x 50 (the 2-core CPU run)
    python experiments/architecture.py --stage publish    # the table again from the raw outputs
    python experiments/architecture.py --smoke            # every step at the smallest size

Every step is one of the project's CLIs, printed before it runs (the sweep's driver runs them);
training resumes from its workdir (RUNS/sweep_MODEL/) and a finished evaluation or synthesis is
skipped. Raw outputs: RUNS/architecture/. Published: docs/results/architecture/ (summary.md,
comparison.json, grids, timings with machine and load); with --smoke, everything in RUNS/smoke/.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import alignment_sweep as sweep  # noqa: E402  (its commands, driver and row collection)

PUBLISH = os.path.join("docs", "results", "architecture")
SWEEP = os.path.join(sweep.PUBLISH, "sweep.json")
MODELS = {  # name -> (training flags, the ball it was trained at), as in the sweep
    "DeepLabV3-standard": (["--config", "configs/camvid_deeplabv3_standard.py"], None),
    "DeepLabV3-Linf-4": (["--config", "configs/camvid_deeplabv3_at.py"], sweep.COMMON),
}
FCN = {"FCN-standard": "standard", "FCN-Linf-4": "Linf-4"}  # our row name -> the sweep's


def main():
    parser = sweep.driver_parser(__doc__)
    parser.add_argument("--sea-steps", type=int, default=100,
                        help="SEA iterations per loss (the sweep's FCN rows used 100)")
    args = parser.parse_args()
    sea_steps = sweep.SMOKE_SEA_STEPS if args.smoke else args.sea_steps
    sweep.drive("architecture", args, MODELS,
                lambda results, timings, where: publish(results, timings, sea_steps,
                                                        where or PUBLISH),
                sea_steps=args.sea_steps)


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

    holes, steps = sweep.fill_protocol({k: r for k, r in rows.items()
                                        if r["architecture"] != "FCN"})
    lines = ["| model | architecture | clean | SEA at Linf 4/255 | SEA iterations per loss | "
             "alignment | PSNR | low-pass PSNR | SSIM | HF ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        iterations = 100 if r["architecture"] == "FCN" else sea_steps
        lines.append(f"| {name} | {r['architecture']} | {pct(r['clean'])} | "
                     f"{pct(r['sea_common'])} | {iterations} | {r['alignment']:.3f} ± "
                     f"{r['alignment_se']:.3f} | {r['psnr']:.2f} | {r['psnr_lowpass']:.2f} | "
                     f"{r['ssim']:.3f} | {r['high_frequency_ratio']:.3f} |")
    lines += ["", "Pixel accuracy / mIoU (%), CamVid val. FCN rows: docs/results/alignment_sweep; "
              "DeepLabV3 rows: this run (configs/camvid_deeplabv3_*.py: the FCN configs' "
              "backbone under DeepLabV3's head). Alignment: cosine between the first "
              f"descent direction and (original - start) in {holes} car holes, mean ± standard "
              f"error; a random direction scores {floor:.3f}. Fill metrics after the "
              f"{steps}-step descent."]
    return "\n".join(lines) + "\n"


def publish(results, timings, sea_steps, where=PUBLISH, sweep_file=SWEEP):
    """This run's rows (raw outputs in `results`) beside the sweep's FCN rows: summary.md,
    comparison.json, grids."""
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

"""experiments/camvid.py builds its summary table from the CLIs' JSON files (hand-made here)."""

import importlib.util
import json
import os

from tests.helpers import paths

ROOT = str(paths.REPO)


def _load_driver():
    spec = importlib.util.spec_from_file_location(
        "camvid_experiment", os.path.join(ROOT, "experiments", "camvid.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score(acc, miou):
    return {"pixel_acc": acc, "miou": miou}


def test_summary_table_reads_every_result(tmp_path):
    driver = _load_driver()
    write = lambda name, value: (tmp_path / name).write_text(json.dumps(value))  # noqa: E731
    write("eval_train_adversary_results.json", {"results": {
        "standard": {"clean": _score(0.9, 0.5), "pgd": _score(0.6, 0.3)},
        "AT": {"clean": _score(0.85, 0.45), "pgd": _score(0.8, 0.4)}}})
    write("eval_strong_results.json", {"results": {
        "standard": {"pgd": _score(0.5, 0.2), "segpgd": _score(0.4, 0.1)},
        "AT": {"pgd": _score(0.78, 0.37), "segpgd": _score(0.75, 0.35)}}})
    curve = lambda base: [{"eps": e / 255, **_score(base - e / 100, base / 2 - e / 100)}  # noqa: E731
                          for e in (0, 2, 4, 8)]
    write("eval_curve_curve.json", {"curves": {"standard": curve(0.9), "AT": curve(0.85)}})
    quality = lambda psnr: {"psnr": psnr, "psnr_lowpass": psnr + 1, "ssim": 0.5,  # noqa: E731
                            "hole_accuracy": 0.75, "high_frequency": 0.25}
    for name in driver.SYNTHESES:
        write(f"{name}_metrics.json", {"summary": {
            "start": quality(10.0), "standard": quality(11.0), "AT": quality(12.5)}})

    table = driver.summary(str(tmp_path))
    # clean | PGD-3 | PGD-10 (the curve's 4/255 point) | PGD-20 x3 | SegPGD-20 x3
    assert "| standard | 90.0 / 50.0 | 60.0 / 30.0 | 86.0 / 41.0 | 50.0 / 20.0 | 40.0 / 10.0 |" in table
    assert "| AT | 85.0 / 45.0 | 80.0 / 40.0 | 81.0 / 38.5 | 78.0 / 37.0 | 75.0 / 35.0 |" in table
    assert "| 8/255 | 82.0 / 37.0 | 77.0 / 34.5 |" in table
    assert "| inpaint_cars | AT | 12.50 | 13.50 | 0.500 | 75.0 | 0.25 |" in table
    assert "| generate | start | 10.00 | 11.00 | 0.500 | - | 0.25 |" in table

"""experiments/camvid.py builds its summary table from the CLIs' JSON files (hand-made here)."""

import importlib.util
import json
import os

from tests.helpers import paths

ROOT = str(paths.REPO)


def _load_driver(name="camvid"):
    """experiments/NAME.py as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_experiment", os.path.join(ROOT, "experiments", f"{name}.py"))
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
        "AT": {"clean": _score(0.85, 0.45), "pgd": _score(0.8, 0.4)}}, "images": 101})
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
    assert "CamVid val (101 images)" in table


def test_alignment_sweep_commands_and_table(tmp_path):
    """The sweep's evaluations (each model at its training budget and the common one) and its
    table, built from hand-made CLI outputs."""
    sweep = _load_driver("alignment_sweep")
    commands = {label: argv for label, argv, _ in sweep.evaluate_commands("R", "R/sweep",
                                                                          "camvid:D", 100)}
    assert sorted(commands) == sorted(
        [f"sea_common_{m}" for m in sweep.MODELS]
        + [f"sea_own_{m}" for m in ("Linf-2", "Linf-8", "L2-0.5", "L2-1.0", "L2-2.0")])
    own = commands["sea_own_L2-1.0"]
    assert own[own.index("--norm") + 1] == "l2" and own[own.index("--eps") + 1] == "1.0"
    common = commands["sea_common_L2-1.0"]
    assert common[common.index("--norm") + 1] == "linf" and "4/255" in common

    results = tmp_path / "results"
    write = lambda path, value: (path.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                                 path.write_text(json.dumps(value)))
    fill = {}
    for i, (name, (_, budget)) in enumerate(sweep.MODELS.items()):
        clean, robust = _score(0.9 - i / 100, 0.5 - i / 100), _score(0.5 + i / 100, 0.2 + i / 100)
        write(results / f"sea_common_{name}" / "results.json",
              {"results": {name: {"clean": clean, "sea": robust}}})
        if budget is not None and budget != sweep.COMMON:
            row = "sea" if budget[0] == "linf" else "sea-l2"
            write(results / f"sea_own_{name}" / "results.json",
                  {"results": {name: {"clean": clean, row: _score(0.7, 0.3)}}})
        fill[name] = {"alignment": i / 10, "psnr": 14.0 + i, "psnr_lowpass": 16.0, "ssim": 0.2,
                      "hole_accuracy": 0.5, "high_frequency": 0.01, "high_frequency_original": 0.1}
    holes = [{"models": {name: {"alignment": fill[name]["alignment"] + d} for name in fill}}
             for d in (-0.1, 0.1)]  # two holes: sd 0.141, standard error 0.1
    write(results / "inpaint_cars" / "metrics.json",
          {"summary": {**fill, "start": {"alignment": -0.01}}, "images": holes,
           "settings": {"steps": 60}})

    rows, floor = sweep.collect(str(results))
    assert floor == -0.01 and list(rows) == list(sweep.MODELS)
    assert rows["standard"]["sea_own"] is None and rows["Linf-4"]["sea_own"] == \
        rows["Linf-4"]["sea_common"]
    assert rows["L2-1.0"]["sea_own"] == _score(0.7, 0.3)
    assert abs(rows["L2-1.0"]["high_frequency_ratio"] - 0.1) < 1e-12
    table = sweep.summary(rows, floor)
    assert "| standard | - | 90.0 / 50.0 | - | 50.0 / 20.0 | 0.000 ± 0.100 | 14.00 |" in table
    assert "| L2-1.0 | L2 1.0 | 85.0 / 45.0 | 70.0 / 30.0 | 55.0 / 25.0 | 0.500 ± 0.100 |" in table
    assert "a random direction scores -0.010" in table
    assert "in 2 car holes" in table and "after the 60-step descent" in table
    sweep.scatter(rows, floor, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_architecture_comparison_runs_the_sweeps_protocol_and_tables_both_families(tmp_path):
    """experiments/architecture.py: the DeepLabV3 pair trained by its configs and evaluated at the
    sweep's common ball, and a table with the sweep's FCN rows beside this run's rows."""
    driver = _load_driver("architecture")
    sweep = driver.sweep
    train = {label: argv for label, argv, _ in sweep.train_commands("R", "camvid:D", None,
                                                                     driver.MODELS)}
    assert train["train_DeepLabV3-Linf-4"][:3] == ["train.py", "--config",
                                                    "configs/camvid_deeplabv3_at.py"]
    evaluations = {label: argv for label, argv, _ in sweep.evaluate_commands(
        "R", "R/architecture", "camvid:D", 50, models=driver.MODELS)}
    assert sorted(evaluations) == ["sea_common_DeepLabV3-Linf-4", "sea_common_DeepLabV3-standard"]
    argv = evaluations["sea_common_DeepLabV3-Linf-4"]
    assert argv[argv.index("--steps") + 1] == "50" and argv[argv.index("--eps") + 1] == "4/255"

    results = tmp_path / "results"
    write = lambda path, value: (path.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                                 path.write_text(json.dumps(value)))
    fill = {"alignment": 0.2, "psnr": 14.0, "psnr_lowpass": 16.0, "ssim": 0.1,
            "hole_accuracy": 0.9, "high_frequency": 0.02, "high_frequency_original": 0.1}
    for i, name in enumerate(driver.MODELS):
        write(results / f"sea_common_{name}" / "results.json", {"results": {name: {
            "clean": _score(0.8 + i / 100, 0.4), "sea": _score(0.1 + i / 2, 0.05 + i / 4)}}})
    holes = [{"models": {name: {"alignment": 0.2 + d} for name in driver.MODELS}}
             for d in (-0.1, 0.1)]
    write(results / "inpaint_cars" / "metrics.json",
          {"summary": {**{name: fill for name in driver.MODELS}, "start": {"alignment": -0.01}},
           "images": holes, "settings": {"steps": 30}})
    fcn = {"clean": _score(0.9, 0.5), "sea_common": _score(0.2, 0.1), "alignment": 0.03,
           "alignment_se": 0.01, "psnr": 13.0, "psnr_lowpass": 15.0, "ssim": 0.09,
           "high_frequency_ratio": 3.0}
    table, floor = driver.rows(str(results), {"standard": fcn, "Linf-4": fcn, "Linf-8": None})
    assert list(table) == ["FCN-standard", "FCN-Linf-4", "DeepLabV3-standard",
                           "DeepLabV3-Linf-4"]
    text = driver.summary(table, floor, 50)
    assert "| FCN-Linf-4 | FCN | 90.0 / 50.0 | 20.0 / 10.0 | 100 | 0.030 ± 0.010 |" in text
    assert ("| DeepLabV3-Linf-4 | DeepLabV3 | 81.0 / 40.0 | 60.0 / 30.0 | 50 | 0.200 ± 0.100 | "
            "14.00 | 16.00 | 0.100 | 0.200 |") in text
    assert "a random direction scores -0.010" in text
    assert "in 2 car holes" in text and "after the 30-step descent" in text


def test_smoke_commands_are_the_real_ones_at_the_smallest_size():
    """--smoke: the same calls, each at the smallest model of its config's family, 2 training
    steps, SEA's fewest iterations (3) on 2 images at 60x80; the real calls keep their budget."""
    sweep = _load_driver("alignment_sweep")
    models = {**sweep.MODELS, **_load_driver("architecture").MODELS}
    real = sweep.train_commands("R", "camvid:D", None, models)
    smoke = sweep.train_commands("R/smoke", "camvid:D", None, models, smoke=True)
    for (label, argv, _), (smoke_label, smoke_argv, _) in zip(real, smoke, strict=True):
        assert smoke_label == label
        assert smoke_argv[:len(argv)] == [a.replace("R/", "R/smoke/") for a in argv]
        family = "deeplabv3" if "DeepLabV3" in label else "fcn"
        assert f"--config.model.arch={family}_resnet14_w8" in smoke_argv
        assert "--config.steps=2" in smoke_argv
    assert not any("--config.model.arch" in a for _, argv, _ in real for a in argv)

    evaluations = sweep.evaluate_commands("R/smoke", "R/smoke/sweep", "camvid:D", 100,
                                          smoke=True)
    for _, argv, done in evaluations:
        flags = dict(zip(argv[::2], argv[1::2])) | dict(zip(argv[1::2], argv[2::2]))
        assert (flags["--steps"], flags["--num-images"], flags["--short-side"]) == ("3", "2",
                                                                                      "60")
        assert argv.count("--steps") == 1 and done.startswith("R/smoke/sweep/")

"""The planning command: FLOPs that agree with an independent count, what remat saves,
the largest batch that fits, and one-line errors."""

import pytest

from jaxseg import plan
from jaxseg.cli import plan as plan_cli
from jaxseg.config import apply_overrides, load
from tests.helpers.cli import one_line_error, run_cli

# One worker runs this file (make test: --dist loadgroup), so its module fixture is built once.
pytestmark = [pytest.mark.xdist_group("test_plan")]


QUICK = ["adv.mode=pgd", "adv.steps=3", "model.num_classes=21", "eval.attack=pgd",
         "eval.steps=5"]
ONE = dict(batches=(1,), remats=("none",), dtypes=("float32",))


def quick_config():
    return apply_overrides(load("configs/quick.py"), QUICK)


@pytest.fixture(scope="module")
def quick_plan():
    """The train step (PGD-3) and an evaluation batch (PGD-5) of quick.py at batch 1, as the CPU
    builds them (loops unrolled): shared by the tests below, each compile costs seconds."""
    return plan.plan(quick_config(), **ONE)


@pytest.mark.slow
def test_remat_keeps_less_and_flops_grow_with_the_batch(quick_plan):
    rows = quick_plan + plan.plan(quick_config(), batches=(2,), remats=("none", "full"),
                                  dtypes=("float32",), evaluation=False)
    train = {(r.remat, r.batch): r for r in rows if r.program == "train"}
    assert sorted(train) == [("full", 2), ("none", 1), ("none", 2)]
    plain, remat = train["none", 2], train["full", 2]
    assert remat.kept_gb < 0.5 * plain.kept_gb  # a block keeps only its input
    assert plain.gflops < remat.gflops < 1.5 * plain.gflops  # recomputed forwards
    # Per-example work doubles; the optimizer update does not depend on the batch.
    assert 1.8 * train["none", 1].gflops < train["none", 2].gflops < 2 * train["none", 1].gflops
    for row in rows:
        assert row.peak_gb > 0 and row.step_ms > 0
        assert row.images_per_s == pytest.approx(1e3 * row.batch / row.step_ms)


def test_largest_batch_from_a_line_through_the_peaks():
    rows = [plan.Row("train", b, "float32", "none", 1.0, 2.0 + 3.0 * b, None, 1.0, 1.0)
            for b in (1, 2, 4)]
    rows += [plan.Row("eval", b, "float32", "none", 1.0, 85.0 + b, None, 1.0, 1.0) for b in (1, 2)]
    rows.append(plan.Row("eval", 1, "bfloat16", "none", 1.0, 1.0, None, 1.0, 1.0))
    fits = plan.largest_batch(rows, 80)
    assert fits[("train", "float32", "none")] == 26  # 2 + 3 * 26 = 80
    assert fits[("eval", "float32", "none")] == 0  # not even one image
    assert fits[("eval", "bfloat16", "none")] is None  # one batch size: no line


@pytest.mark.slow
def test_flops_agree_with_torch_flop_counter_for_deeplabv3_resnet50_at_224():
    """One standard train step at batch 2 (forward + backward, CE + 0.5 aux CE) as torch counts
    it, less the taps that fall on zero padding, which torch counts and XLA does not: at output
    stride 8 ASPP's rates 12 / 24 / 36 on a 28x28 map put 28 % of torch's count there (and the
    rate 36 past the whole map, where jaxseg runs the centre tap alone). Each padded tap is
    counted in the forward and in both backward convolutions (the stem: the weight's only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tests.helpers import torch_reference as tr

    model = tr.torch_model("deeplabv3_resnet50", seed=0).train()
    images, labels = torch.rand(2, 3, 224, 224), torch.randint(0, 21, (2, 224, 224))
    with FlopCounterMode(display=False) as counter:
        out = model(images)
        loss = torch.nn.functional.cross_entropy(out["out"], labels) \
            + 0.5 * torch.nn.functional.cross_entropy(out["aux"], labels)
        loss.backward()
    stem = model.backbone.conv1
    padded = sum(flops * (2 if conv is stem else 3)
                 for conv, flops in tr.padding_tap_flops(model.eval(), images))
    assert 0.2 < padded / counter.get_total_flops() < 0.4
    config = apply_overrides(load("configs/coco_deeplabv3_r50_standard.py"),
                             ["data.crop_size=(224,224)"])
    row, = plan.plan(config, batches=(2,), remats=("none",), dtypes=("float32",),
                     evaluation=False)
    assert row.gflops * 1e9 == pytest.approx(counter.get_total_flops() - padded, rel=0.05)


def resize_flops(batch, channels, source, target):
    """jaxseg's bilinear resize: two matmuls with interpolation matrices (torch counts none)."""
    (h, w), (height, width) = source, target
    return 2 * batch * channels * (height * h * w + height * width * w)


# Where each MobileNet model resizes at 224 px: its outputs from output stride 16 / 8 and LR-ASPP's
# 128-channel high features onto the low ones.
MOBILENET_RESIZES = {
    "deeplabv3_mobilenet_v3_large": [(21, (14, 14), (224, 224)), (21, (28, 28), (224, 224))],
    "lraspp_mobilenet_v3_large": [(21, (28, 28), (224, 224)), (128, (14, 14), (28, 28))],
}


@pytest.mark.parametrize("arch", sorted(MOBILENET_RESIZES))
def test_mobilenet_forward_flops_agree_with_torch_flop_counter(arch):
    """XLA's count of the forward pass at batch 2, 224 px (what plan.py sums) against torch's
    convolutions less their padded taps, plus jaxseg's resize matmuls; what remains is XLA
    counting elementwise work (BN, hardswish, gates: 2.1 % and 4.0 % here). Forward only:
    torch's counter counts the backward of a depthwise convolution as if it were dense (57.7
    GFLOP for LR-ASPP's at batch 2, against 1.5 for the whole forward)."""
    import jax
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from jaxseg import models, runtime
    from tests.helpers import torch_reference as tr

    reference = tr.torch_model(arch, seed=0)
    images = torch.rand(2, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(images)
    expected = (counter.get_total_flops()
                - sum(flops for _, flops in tr.padding_tap_flops(reference, images))
                + sum(resize_flops(2, *resize) for resize in MOBILENET_RESIZES[arch]))
    model = models.build(arch, num_classes=21, aux=None)
    shapes = jax.eval_shape(lambda: models.init(model, jax.random.key(0)))
    with runtime.conv_policy(winograd_convs=False):  # as plan.py counts
        ours = plan._flops(lambda v, x: model.apply(v, x), (
            shapes, jax.ShapeDtypeStruct((2, 224, 224, 3), jax.numpy.float32)))
    assert expected <= ours <= 1.05 * expected


def test_run_estimate_from_the_config_as_written():
    """Steps from epochs x batches per epoch (or config.steps), the global batch over the
    devices, and wall time / device-hours from the train row at that per-device batch."""
    config = apply_overrides(load("configs/coco_fcn50_at.py"), [])  # 9 epochs, global batch 32
    rows = [plan.Row("train", 4, "bfloat16", "none", 1.0, 5.0, 1.0, 100.0, 40.0),
            plan.Row("train", 8, "bfloat16", "none", 1.0, 9.0, 1.0, 180.0, 44.0)]
    lines = plan.run_estimate(config, rows, devices=8, accelerator="h100", train_images=32000)
    assert lines[0].startswith("the run as configured: 9 epochs x 1,000 batches of 32 (32,000 "
                               "training images) = 9,000 steps, global batch 32 = 4 per device")
    assert lines[1].startswith("  bfloat16 remat=none: roofline 100.0 ms/step -> 0.2 h wall, "
                               "2.0 device-hours")  # 9000 x 0.1 s = 0.25 h, x 8 devices
    assert "--train-images" in plan.run_estimate(config, rows, 8, "h100")[0]
    assert "does not split" in plan.run_estimate(config, rows, 5, "h100")[0]
    assert "--batches 2" in plan.run_estimate(config, rows, 16, "h100", 32000)[1]
    row = rows[0].line()
    assert row == ("train bfloat16 remat=none batch 4/device: 1 GFLOP, peak 5.00 GB, kept "
                   "1.00 GB, roofline 100.0 ms (40.0 images/s)")


@pytest.mark.parametrize("args, message", [
    (["--memory-gb", "0"], "--memory-gb must be a positive number of GB, got 0.0"),
    (["--memory-gb", "-4"], "--memory-gb must be a positive number of GB"),
    (["--memory-gb", "nan"], "--memory-gb must be a positive number of GB, got nan"),
    (["--devices", "0"], "--devices must be >= 1"),
    (["--batches", "one"], "--batches 'one': expected a comma-separated list"),
    (["--batches", "0"], "per-device batches must be >= 1"),
    (["--dtypes", "float16"], "--dtypes: 'float16' is not float32 or bfloat16"),
    (["--remat", "some"], "unknown remat 'some'"),
    (["--config.model.arch=resnet9"], "unknown arch 'resnet9'"),
])
def test_bad_input_is_one_line(capsys, args, message):
    one_line_error(capsys, run_cli(plan_cli.main, "--config", "configs/quick.py", *args), message)


@pytest.mark.slow
def test_rolled_loops_change_no_figure(quick_plan):
    """GPUs and TPUs roll attack loops, whose body XLA counts once; an attack fixes its loops
    when it is made, so the plan builds its programs per loop policy. Simulated here: every
    loop rolled by default gives the same FLOPs, peaks and roofline as CPU's unrolled default."""
    from jaxseg import runtime

    with runtime.loop_policy("off"):
        rolled = plan.plan(quick_config(), **ONE)
    assert [r.program for r in rolled] == ["train", "eval"]
    for a, b in zip(rolled, quick_plan):
        assert a.gflops == pytest.approx(b.gflops, rel=1e-9)
        assert a.peak_gb == pytest.approx(b.peak_gb, rel=1e-9)
        assert a.step_ms == pytest.approx(b.step_ms, rel=1e-9)


@pytest.mark.slow
def test_long_eval_attacks_are_counted_as_if_unrolled(quick_plan):
    import jax
    import jax.numpy as jnp

    from jaxseg import attacks, models, runtime
    from jaxseg.evaluation import confusion

    row, = [r for r in quick_plan if r.program == "eval"]
    model = models.build("fcn_resnet14_w8", 21)
    variables = jax.eval_shape(lambda: models.init(model, jax.random.key(0), (32, 32)))
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    # the plan counts lax convolutions, as accelerators run them (not CPU's Winograd ones)
    with runtime.loop_policy("on"), runtime.conv_policy(winograd_convs=False):
        spec = attacks.make("pgd", eps=8 / 255, steps=5)  # an attack fixes its loops when made
        direct = jax.jit(lambda v, x, y, k, e, s: confusion.batch_counts(
            model.apply, spec.static, 21, v, x, y, k, e, s, None)).lower(
            variables, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
            jax.ShapeDtypeStruct((1, 32, 32), jnp.int32), jax.random.key(0), scalar,
            scalar).cost_analysis()["flops"]
    assert row.gflops * 1e9 == pytest.approx(direct, rel=1e-6)

"""Inpainting / generation on the attack kernel, edit targets, mask specs and quality metrics.

A tiny randomly initialised FCN on 32x32 synthetic scenes: the properties tested here hold for
any differentiable model, so no training is needed."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import attacks, data, models, runtime, synthesis
from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError
from jaxseg.synthesis import edits as masks
from jaxseg.synthesis import quality
from tests.helpers import multiprocess, paths
from tests.helpers.forward import forward

SIZE = 32
ROOT = str(paths.REPO)


@pytest.fixture(scope="module")
def tiny():
    model = models.build("fcn_resnet14_w8", num_classes=7)
    return model, models.init(model, jax.random.key(0), (SIZE, SIZE))


@pytest.fixture(scope="module")
def batch():
    ds = data.get_dataset("synthetic", "val", size=(SIZE, SIZE))
    images = np.stack([ds[i]["image"] for i in range(2)]).astype(np.float32) / 255.0
    labels = np.stack([ds[i]["label"] for i in range(2)]).astype(np.int32)
    hole = np.zeros(labels.shape, bool)
    hole[:, 8:20, 10:24] = True
    return images, labels, hole


def _ce(model, variables, x, labels):
    return np.asarray(losses.cross_entropy(forward(model, variables, x)["out"], labels))


# ---------------------------------------------------------------------------------------------
# Inpainting


def test_inpaint_large_lambda_keeps_known_pixels_and_changes_the_hole(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    key = jax.random.key(0)
    run = lambda lam: synthesis.run("inpaint", model.apply, variables, images, labels, key,  # noqa: E731
                                    mask=hole, lam=lam, steps=12, step_size=0.5)
    free, tight = run(0.0), run(1e3)
    known = ~hole[..., None]
    start = np.asarray(tight.start)
    # The start is the image with the hole filled by the known pixels' per-channel mean.
    mean = (images * known).sum((1, 2)) / known.sum((1, 2))
    np.testing.assert_allclose(start[hole], np.repeat(mean, hole[0].sum(), axis=0), atol=1e-5)
    np.testing.assert_array_equal(start[~hole], images[~hole])
    drift = lambda r: np.abs(np.asarray(r.x) - images)[~hole].max()  # noqa: E731
    assert drift(tight) < 0.06
    assert drift(free) > 3 * drift(tight)
    kept = quality.outside_rmse(tight.x, images, hole).max()
    assert kept < 0.01
    moved = np.abs(np.asarray(tight.x) - start)[hole].mean()
    assert moved > 0.015 and moved > 3 * kept
    # Descending the objective lowered the cross-entropy of the target.
    assert (_ce(model, variables, tight.x, labels) < _ce(model, variables, tight.start, labels)).all()


def test_inpaint_never_reads_the_hole(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    other = np.where(hole[..., None], np.random.default_rng(0).random(images.shape), images)
    run = lambda x: synthesis.run("inpaint", model.apply, variables, x, labels,  # noqa: E731
                                  jax.random.key(1), mask=hole, steps=3, step_size=0.3)
    np.testing.assert_array_equal(np.asarray(run(images).x), np.asarray(run(other.astype(np.float32)).x))


def test_inpaint_penalties_and_trust_region(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    logits_fn = attacks.model_logits(model.apply, variables)
    key = jax.random.key(2)
    for penalty in synthesis.PENALTIES:
        out = jax.jit(lambda x, lam: synthesis.inpaint(logits_fn, x, labels, hole, key, lam=lam,
                                                       steps=4, step_size=1.0, penalty=penalty,
                                                       radius=0.3))(images, 5.0)
        change = np.linalg.norm((np.asarray(out.x) - np.asarray(out.start)).reshape(2, -1), axis=1)
        assert (change <= 0.3 + 1e-4).all() and (change > 0.1).all()
        assert 0 <= np.asarray(out.x).min() and np.asarray(out.x).max() <= 1


@pytest.mark.slow
def test_trajectory_frames_match_one_run(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    kwargs = dict(mask=hole, steps=6, step_size=0.4)
    key = jax.random.key(3)
    whole = synthesis.run("inpaint", model.apply, variables, images, labels, key, **kwargs)
    framed = synthesis.run("inpaint", model.apply, variables, images, labels, key, frames=3, **kwargs)
    assert whole.frames is None and whole.trace.shape == (6, 2)
    assert framed.frames.shape == (4, 2, SIZE, SIZE, 3) and framed.trace.shape == (6, 2)
    np.testing.assert_allclose(framed.x, whole.x, atol=1e-5)
    np.testing.assert_allclose(framed.trace, whole.trace, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(framed.frames[0], framed.start)
    np.testing.assert_array_equal(framed.frames[-1], framed.x)


# ---------------------------------------------------------------------------------------------
# Generation


def test_generate_lowers_ce_from_the_mean_image(tiny, batch):
    model, variables = tiny
    images, labels, _ = batch
    out = synthesis.run("generate", model.apply, variables, images, labels, jax.random.key(0),
                        steps=10)
    start = np.asarray(out.start)
    np.testing.assert_allclose(start, np.broadcast_to(images.mean((1, 2), keepdims=True),
                                                      images.shape), atol=1e-6)
    # The default (scaled) step lowers the objective over the run (even for an untrained model).
    trace = np.asarray(out.trace)
    assert (trace[-1] < trace[0]).all()
    final, first = _ce(model, variables, out.x, labels), _ce(model, variables, start, labels)
    assert (final < first - 0.01).all()
    np.testing.assert_allclose(trace[0], first, rtol=1e-5)


def test_deterministic_for_a_key(tiny, batch):
    model, variables = tiny
    images, labels, _ = batch
    run = lambda seed: np.asarray(synthesis.run(  # noqa: E731
        "generate", model.apply, variables, images, labels, jax.random.key(seed), steps=3,
        jitter=0.1).x)
    first = run(0)
    np.testing.assert_array_equal(first, run(0))
    assert np.abs(first - run(1)).max() > 0.01


@pytest.mark.slow
def test_unroll_changes_nothing_but_compilation(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    def run(mode):
        with runtime.loop_policy(mode):
            return synthesis.run("inpaint", model.apply, variables, images, labels,
                                 jax.random.key(0), mask=hole, steps=4, frames=2)

    rolled, unrolled = run("off"), run("on")
    np.testing.assert_allclose(rolled.x, unrolled.x, atol=1e-6)
    np.testing.assert_allclose(rolled.trace, unrolled.trace, rtol=1e-5)
    with pytest.raises(JaxsegError, match="loop mode"):
        run("yes")


@pytest.mark.slow
def test_long_descents_chain_short_unrolled_programs_with_the_same_iterates(tiny, batch,
                                                                           monkeypatch):
    """Past the unroll limit `run` loops on the host over one compiled program of
    `runtime.chunk` unrolled steps; iterates, trace and frames equal one rolled program's."""
    model, variables = tiny
    monkeypatch.delenv(runtime.LIMIT_ENV, raising=False)  # the suite sets a small limit
    images, labels, hole = batch
    assert runtime.chunk(720) == 30 and runtime.chunk(37) == 1
    assert runtime.chunk(60, 15) == 15 and runtime.chunk(40, 10) == 10
    assert runtime.chunk(32) is None  # short descents: one program

    def run(mode, progress=None):
        # Small steps: the unrolled and the rolled program round differently (~1e-7), and 40
        # normalised steps of 0.3 on this random model amplify that to ~5e-2 (chaos, not a
        # chaining error); at 0.05 the two stay within 2e-7. The chaining is what is tested.
        with runtime.loop_policy(mode):
            return synthesis.run("inpaint", model.apply, variables, images, labels,
                                 jax.random.key(0), mask=hole, steps=40, frames=4, jitter=0.05,
                                 step_size=0.05, progress=progress)

    before = synthesis.compiled_programs()
    reported = {"auto": [], "off": []}
    chained = run("auto", reported["auto"].append)
    assert synthesis.compiled_programs() == before + 1  # four 10-step calls, one program
    rolled = run("off", reported["off"].append)
    assert reported == {"auto": [10, 10, 10, 10], "off": [40]}  # progress after each program
    # the start (the hole filled with the mean) comes from two different programs: XLA may sum
    # in another order (jax 0.12: one pixel of 6144 differs by 3e-8)
    np.testing.assert_allclose(chained.start, rolled.start, atol=1e-6)
    np.testing.assert_allclose(chained.x, rolled.x, atol=1e-5)
    np.testing.assert_allclose(chained.trace, rolled.trace, rtol=1e-4)
    assert chained.trace.shape == (40, 2) and chained.frames.shape == rolled.frames.shape
    np.testing.assert_allclose(chained.frames, rolled.frames, atol=1e-5)
    generated = synthesis.run("generate", model.apply, variables, images, labels,
                              jax.random.key(0), steps=33, step_size=0.5)
    assert generated.trace.shape == (33, 2) and generated.frames is None


@pytest.mark.slow
def test_sign_and_plain_rules(tiny, batch):
    model, variables = tiny
    images, labels, _ = batch
    sign = synthesis.run("generate", model.apply, variables, images, labels, jax.random.key(0),
                         steps=2, rule="sign")
    step = synthesis.default_step_size("generate", images.shape, "sign")
    # Two sign steps move each value by at most 2 * step (the box may clip).
    assert np.abs(np.asarray(sign.x) - np.asarray(sign.start)).max() <= 2 * step + 1e-6
    with pytest.raises(JaxsegError, match="plain"):
        synthesis.run("generate", model.apply, variables, images, labels, jax.random.key(0),
                      steps=2, rule="plain")
    plain = synthesis.run("generate", model.apply, variables, images, labels, jax.random.key(0),
                          steps=2, rule="plain", step_size=50.0)
    assert np.isfinite(np.asarray(plain.x)).all()


def test_hyperparameters_are_traced(tiny, batch):
    model, variables = tiny
    images, labels, hole = batch
    common = dict(mask=hole, steps=2)
    synthesis.run("inpaint", model.apply, variables, images, labels, jax.random.key(0), **common)
    before = synthesis.compiled_programs()
    for lam, step in ((1.0, 0.2), (30.0, 0.05)):
        synthesis.run("inpaint", model.apply, variables, images, labels, jax.random.key(0),
                      lam=lam, step_size=step, **common)
    assert synthesis.compiled_programs() == before


def test_recipe_scaling():
    # Santurkar's lengths are for 224x224x3; the per-pixel RMS change is kept.
    assert synthesis.default_step_size("inpaint", (1, 224, 224, 3)) == pytest.approx(0.1)
    assert synthesis.default_step_size("generate", (1, 112, 112, 3)) == pytest.approx(0.5)
    assert synthesis.default_step_size("generate", (1, 224, 224, 3), "sign") == pytest.approx(
        1 / np.sqrt(224 * 224 * 3))
    assert synthesis.default_radius("inpaint", (1, 448, 448, 3)) == pytest.approx(43.2)


@pytest.mark.slow
def test_sharded_batch_matches_single_device():
    """Under jit with the batch sharded over 4 CPU devices the result equals the 1-device one."""
    script = textwrap.dedent("""
        import jax, numpy as np
        from jaxseg import models, runtime, synthesis
        model = models.build("fcn_resnet14_w8", num_classes=3)
        variables = models.init(model, jax.random.key(0), (32, 32))
        rng = np.random.default_rng(0)
        images = rng.random((4, 32, 32, 3), np.float32)
        labels = rng.integers(0, 3, (4, 32, 32)).astype(np.int32)
        hole = np.zeros((4, 32, 32), bool); hole[:, 4:20, 6:22] = True
        mesh = runtime.make_mesh()
        assert mesh.size == 4, mesh
        args = ("inpaint", model.apply, variables, images, labels, jax.random.key(0))
        sharded = synthesis.run(*args, mask=hole, steps=3, mesh=mesh)
        assert len(sharded.x.sharding.device_set) == 4, sharded.x.sharding
        single = synthesis.run(*args, mask=hole, steps=3)
        np.testing.assert_allclose(np.asarray(sharded.x), np.asarray(single.x), atol=2e-5)
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS=multiprocess.xla_flags(4),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("change, message", [
    (lambda im, lb, m: (im, lb, np.zeros_like(m)), "empty mask"),
    (lambda im, lb, m: (im, lb, np.ones_like(m)), "covers all"),
    (lambda im, lb, m: (im[:, :8, :8], lb[:, :8, :8], m[:, :8, :8]), "too small"),
    (lambda im, lb, m: (im, lb[:, :16], m), "labels shape"),
    (lambda im, lb, m: (im, np.full_like(lb, 9), m), "labels must be in"),
    (lambda im, lb, m: (im * 2, lb, m), r"\[0, 1\]"),
])
def test_run_rejects_bad_inputs(tiny, batch, change, message):
    model, variables = tiny
    images, labels, hole = change(*batch)
    with pytest.raises(JaxsegError, match=message):
        synthesis.run("inpaint", model.apply, variables, images, labels, jax.random.key(0),
                      mask=hole, steps=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"rule": "adam"}, "step rule"), ({"penalty": "l1"}, "penalty"), ({"lam": -1.0}, "lambda"),
    ({"step_size": 0.0}, "step size"), ({"radius": -2.0}, "radius"), ({"steps": 0}, "steps"),
    ({"steps": 5, "frames": 2}, "divide"), ({"bn": "frozen"}, "bn mode"),
])
def test_run_rejects_bad_settings(tiny, batch, kwargs, message):
    model, variables = tiny
    images, labels, hole = batch
    with pytest.raises(JaxsegError, match=message):
        synthesis.run("inpaint", model.apply, variables, images, labels, jax.random.key(0),
                      mask=hole, **{"steps": 2, **kwargs})


# ---------------------------------------------------------------------------------------------
# Edit targets and mask specs


def test_edit_targets():
    labels = np.array([[0, 1, 1], [2, 1, 255]], np.uint8)
    swapped = synthesis.swap_class(labels, 1, 3)
    np.testing.assert_array_equal(swapped, [[0, 3, 3], [2, 3, 255]])
    assert swapped.dtype == np.uint8
    region = np.array([[True, False, False], [True, True, False]])
    painted = synthesis.paint_class(labels, region, 4)
    np.testing.assert_array_equal(painted, [[4, 1, 1], [4, 4, 255]])
    np.testing.assert_array_equal(synthesis.changed(labels, swapped), labels == 1)


def test_mask_specs(tmp_path):
    names = ("background", "disc", "ring")
    label = np.zeros((20, 30), np.uint8)
    label[5:9, 3:7] = 2
    box = masks.parse("rect:2,3,4,5", 20, 30)
    assert box.sum() == 20 and box[3:8, 2:6].all()
    np.testing.assert_array_equal(masks.parse("class:ring", 20, 30, label, names), label == 2)
    np.testing.assert_array_equal(masks.parse("class:2", 20, 30, label, names), label == 2)
    assert masks.parse("all", 20, 30).all()
    a, b = masks.parse("random:3,7", 20, 30), masks.parse("random:3", 20, 30, seed=7)
    np.testing.assert_array_equal(a, b)
    assert 0 < a.sum() < a.size
    assert not np.array_equal(a, masks.parse("random:3,8", 20, 30))
    path = tmp_path / "hole.png"
    Image.fromarray((box * 255).astype(np.uint8)).save(path)
    np.testing.assert_array_equal(masks.parse(str(path), 20, 30), box)


@pytest.mark.parametrize("spec, message", [
    ("rect:25,0,10,5", "outside"), ("rect:0,0,0,5", "positive"), ("rect:1,2,3", "4 comma"),
    ("class:disc", "not present"), ("class:7", "out of range"), ("class:car", "unknown class"),
    ("random:0", "at least one"), ("blob:3", "unknown mask spec"), ("nofile.png", "mask file not found"),
])
def test_bad_mask_specs(spec, message):
    label = np.zeros((20, 30), np.uint8)
    with pytest.raises(JaxsegError, match=message):
        masks.parse(spec, 20, 30, label, ("background", "disc", "ring"))


def test_png_mask_checks(tmp_path):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((10, 30), 255, np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    for name, message in (("empty", "empty"), ("small", "30x10"), ("junk", "cannot read mask")):
        with pytest.raises(JaxsegError, match=message):
            masks.parse(str(tmp_path / f"{name}.png"), 20, 30)


# ---------------------------------------------------------------------------------------------
# Quality metrics on hand-made cases


def _scene(seed=0, size=24):
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 1, size)[None, :, None] * np.linspace(0.2, 0.8, size)[:, None, None]
    return np.broadcast_to(smooth, (size, size, 3)).copy(), rng


def test_psnr():
    ref, _ = _scene()
    hole = np.zeros(ref.shape[:2], bool)
    hole[4:12, 4:12] = True
    assert quality.psnr(ref, ref, hole)[0] == quality.PSNR_CAP
    shifted = np.where(hole[..., None], ref + 0.1, ref + 0.5)  # outside the hole does not count
    assert quality.psnr(shifted, ref, hole)[0] == pytest.approx(20.0)
    _, rng = _scene()
    noisy = ref + rng.choice([-0.05, 0.05], ref.shape)  # MSE 0.0025 -> 26.02 dB
    assert quality.psnr(noisy, ref, hole)[0] == pytest.approx(10 * np.log10(400), abs=1e-9)


def test_psnr_lowpass_forgives_fine_noise_not_wrong_colour():
    ref, rng = _scene()
    hole = np.zeros(ref.shape[:2], bool)
    hole[4:20, 4:20] = True
    assert quality.psnr_lowpass(ref, ref, hole)[0] == quality.PSNR_CAP
    noisy = ref + rng.choice([-0.1, 0.1], ref.shape)
    tinted = ref + 0.1
    assert quality.psnr(noisy, ref, hole)[0] == pytest.approx(quality.psnr(tinted, ref, hole)[0])
    assert quality.psnr_lowpass(noisy, ref, hole)[0] > quality.psnr_lowpass(tinted, ref, hole)[0] + 8


def test_ssim():
    ref, rng = _scene()
    hole = np.zeros(ref.shape[:2], bool)
    hole[6:18, 6:18] = True
    assert quality.ssim(ref, ref, hole)[0] == pytest.approx(1.0, abs=1e-9)
    outside = np.where(hole[..., None], ref, rng.random(ref.shape))
    assert quality.ssim(outside, ref, hole)[0] == pytest.approx(1.0, abs=1e-9)
    noise = np.where(hole[..., None], rng.random(ref.shape), ref)
    flat = np.where(hole[..., None], ref[hole].mean(0), ref)
    assert quality.ssim(noise, ref, hole)[0] < 0.2
    # Brightness shift keeps structure: high but below 1; batch gives one value per example.
    values = quality.ssim(np.stack([ref * 0.9, noise]), np.stack([ref, ref]), np.stack([hole, hole]))
    assert values.shape == (2,) and 0.8 < values[0] < 1.0 and values[1] < 0.2
    assert quality.ssim(flat, ref, hole)[0] < quality.ssim(ref * 0.9, ref, hole)[0]


def test_high_frequency_ratio():
    ref, rng = _scene(size=48)
    hole = np.zeros(ref.shape[:2], bool)
    hole[8:40, 8:40] = True
    noise = rng.random(ref.shape)
    flat = np.full(ref.shape, 0.4)
    hf = lambda x: quality.high_frequency_ratio(x, hole)[0]  # noqa: E731
    assert 0.6 < hf(noise) < 0.9
    assert hf(ref) < 0.01
    assert hf(flat) == 0.0
    # A seam at the hole's edge does not count: only pixels inside the hole are filtered.
    assert hf(np.where(hole[..., None], ref, 1 - ref)) == pytest.approx(hf(ref))


def test_hole_accuracy_and_report():
    labels = np.array([[[0, 1], [2, 255]]])
    predictions = np.array([[[0, 2], [2, 1]]])
    hole = np.array([[[True, True], [False, True]]])
    assert quality.hole_accuracy(predictions, labels, hole)[0] == pytest.approx(0.5)
    assert quality.hole_accuracy(predictions, labels)[0] == pytest.approx(2 / 3)
    assert np.isnan(quality.hole_accuracy(predictions, labels, labels == 255)[0])
    x = np.full((1, 2, 2, 3), 0.5)
    rows = quality.report(x, x, hole, predictions, labels)
    assert rows[0]["psnr"] == quality.PSNR_CAP and rows[0]["outside_rmse"] == 0.0
    summary = quality.summarize(rows + [dict(rows[0], psnr=None)])
    assert summary["psnr"] == quality.PSNR_CAP

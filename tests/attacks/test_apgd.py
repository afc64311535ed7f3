"""APGD as a kernel update rule, the reduced-eps schedule, early stop and the SEA ensemble, on
cases where the answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import attacks
from jaxseg.attacks import kernel, losses
from jaxseg.errors import JaxsegError


def test_checkpoints_follow_the_published_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in iterations.
    assert kernel.apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    assert kernel.apgd_checkpoints(300)[:4] == (66, 123, 171, 210)
    assert kernel.apgd_checkpoints(10) == (2, 3, 4, 5, 6, 7, 8, 9)


def scripted_etas(controls):
    """Step size after each update when the control value at step t is controls[t]."""
    steps = len(controls)
    x_ref = jnp.full((1, 2, 2, 3), 0.5)
    rule = kernel.apgd_update(jnp.sign, kernel.make_project("linf", 0.1), x_ref, 1.0, steps)
    update = jax.jit(rule.update)
    state, x, etas = rule.init(x_ref, 1.0), x_ref, []
    for t, value in enumerate(controls):
        x, state = update(state, x, jnp.ones_like(x), jnp.array([value], jnp.float32),
                          jnp.asarray(t))
        etas.append(float(state.eta[0]))
    return np.array(etas)


def halvings(etas):
    return [t for t in range(len(etas)) if etas[t] < (etas[t - 1] if t else 1.0)]


def test_step_size_halves_exactly_at_the_checkpoints_the_rule_names():
    checks = kernel.apgd_checkpoints(100)
    # Always improving: more than 75 % of each window increases and the best improves: never.
    assert halvings(scripted_etas(np.arange(100.0))) == []
    # Flat: no step increases, so (a) halves at every checkpoint, and only there.
    flat = scripted_etas(np.zeros(100))
    assert halvings(flat) == list(checks) and flat[-1] == 0.5 ** len(checks)
    # Improving up to step 30, then flat: the first window had 22/22 increases (kept), the
    # second 8/19 (<= 75 %: halved), then every later window has none.
    rising = np.concatenate([np.arange(31.0), np.full(69, 30.0)])
    assert halvings(scripted_etas(rising)) == list(checks[1:])


def test_step_size_halves_when_the_best_stalls_after_an_unhalved_checkpoint():
    # Rising to 22 (no halving there), then a drop and a slow climb that stays below the best:
    # 18 of 19 steps increase (condition (a) fails) but the best did not improve since the
    # last, unhalved checkpoint: condition (b) halves at 41.
    controls = np.concatenate([np.arange(23.0), -100.0 + np.arange(77.0)])
    etas = scripted_etas(controls)
    assert halvings(etas)[0] == 41 and etas[40] == 1.0


def linear_model(direction, bias):
    """Per-pixel 2-class logits: l_1 - l_0 = x . direction + bias (an apply_fn)."""
    w = jnp.stack([jnp.zeros(3), jnp.asarray(direction, jnp.float32)], axis=1)  # [3, 2]

    def apply(variables, x, train=False):
        return {"out": x @ w + jnp.asarray([0.0, bias])}

    return apply


def test_apgd_reaches_the_analytic_worst_case_of_a_linear_model():
    """For label 0 the CE grows with l_1 - l_0, which is linear in x: the worst point of the
    Linf ball is x + eps * sign(direction) (inside the box here)."""
    direction = np.array([0.7, -1.3, 0.4], np.float32)
    apply = linear_model(direction, bias=-3.0)  # accuracy stays 1: no early stop
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (3, 8, 8, 3)).astype(np.float32)
    labels = np.zeros((3, 8, 8), np.int32)
    eps = 8 / 255
    spec = attacks.make("apgd", eps=eps, steps=20)
    result = attacks.attack(spec, apply, {}, images, labels, jax.random.key(0))
    worst = images + eps * np.sign(direction)
    np.testing.assert_allclose(result.x, worst, atol=1e-6)
    # and plain PGD from the same start with the same number of steps gets no higher CE
    pgd = attacks.attack(attacks.make("pgd", eps=eps, steps=20), apply, {}, images, labels,
                         jax.random.key(0))
    ce = lambda x: losses.cross_entropy(apply({}, jnp.asarray(x))["out"], labels)  # noqa: E731
    assert np.all(np.asarray(ce(result.x)) >= np.asarray(ce(pgd.x)) - 1e-6)


def test_early_stop_skips_the_steps_once_every_pixel_is_wrong():
    direction = np.array([0.5, 0.5, 0.5], np.float32)
    apply = linear_model(direction, bias=5.0)  # class 1 everywhere: accuracy 0 from the start
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    labels = np.zeros((2, 8, 8), np.int32)
    objective = attacks.segmentation_objective(apply, {}, jnp.asarray(labels), select="accuracy")
    run = lambda stop: attacks.optimize(  # noqa: E731
        objective, images, jax.random.key(0),
        attacks.KernelConfig(steps=5, update="apgd", early_stop=stop), eps=8 / 255,
        step_size=16 / 255)
    start = kernel.make_init(attacks.KernelConfig(steps=5), 8 / 255)(
        jax.random.key(0), jnp.asarray(images), jnp.asarray(images))
    np.testing.assert_array_equal(run(True).x, start)  # not a single step taken
    assert float(jnp.abs(run(False).x - start).max()) > 0


def test_red_eps_schedule_splits_iterations_and_shrinks_the_ball():
    stages = attacks.presets.red_eps_stages(300)
    assert [factor for factor, _ in stages] == [2.0, 1.5, 1.0]
    assert [config.steps for _, config in stages] == [90, 90, 120]
    assert [config.start for _, config in stages] == ["random", "clean", "clean"]
    assert all(config.update == "apgd" for _, config in stages)
    spec = attacks.make("apgd_red", eps=4 / 255, steps=10)
    assert spec.steps == 10 and spec.step_size == pytest.approx(8 / 255)
    apply = linear_model(np.array([0.7, -1.3, 0.4], np.float32), bias=-3.0)
    images = np.random.default_rng(1).uniform(0.2, 0.8, (2, 8, 8, 3)).astype(np.float32)
    x = attacks.attack(spec, apply, {}, images, np.zeros((2, 8, 8), np.int32),
                       jax.random.key(0)).x
    assert float(jnp.abs(x - images).max()) <= 4 / 255 + 1e-6  # the last ball is eps


@pytest.mark.slow
def test_sea_is_an_ensemble_of_red_eps_apgd_on_three_losses():
    weights = losses.balanced_class_weights([10, 30])
    sea = attacks.make("sea", eps=4 / 255, class_weights=weights)
    assert isinstance(sea, attacks.Ensemble) and sea.steps == 900
    assert [m.loss for _, m in sea.members] == ["js", "mce", "mce_bal"]
    assert all(m.name == "apgd_red" and m.steps == 300 for _, m in sea.members)
    with pytest.raises(JaxsegError, match="class weights"):
        attacks.make("sea", eps=4 / 255)
    with pytest.raises(JaxsegError, match="untargeted"):
        attacks.make("apgd", targeted=True)
    apply = linear_model(np.array([0.7, -1.3, 0.4], np.float32), bias=-0.1)
    rng = np.random.default_rng(2)
    images = rng.uniform(0.2, 0.8, (3, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 2, (3, 8, 8)).astype(np.int32)
    small = attacks.make("sea", eps=4 / 255, steps=6, class_weights=weights)
    worst = attacks.attack(small, apply, {}, images, labels, jax.random.key(0))
    for number, (_, member) in enumerate(small.members):
        x = attacks.attack(member, apply, {}, images, labels, jax.random.fold_in(
            jax.random.key(0), number)).x
        accuracy = losses.pixel_accuracy(apply({}, x)["out"], jnp.asarray(labels))
        assert np.all(np.asarray(worst.value) <= np.asarray(accuracy) + 1e-7)

"""Train state and train steps: standard, PGD adversarial (Madry or mixed), FGSM-RS and free.

Every adversarial mode crafts its examples with the attack kernel (`jaxseg.attacks`): PGD and
FGSM-RS call `attacks.presets.run`; free adversarial training (which interleaves parameter updates
with input steps, so it cannot be one kernel call) reuses the kernel's step rule and projection.

Steps are pure functions `step(state, images, labels) -> (state, metrics)`; `compile_step` jits
them over a mesh with the batch sharded, the state replicated and donated.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxseg import attacks, runtime
from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError

ADV_MODES = ("none", "pgd", "fgsm_rs", "free")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array  # raw PRNG key data (uint32), so that orbax saves it like any array
    free_delta: Any = None  # free adversarial training's perturbation, carried across batches

    @property
    def variables(self):
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_state(variables, tx, key, free_delta_shape=None):
    """A fresh state. The variables are copied: compiled steps donate (delete) their input state,
    and that must never delete the caller's arrays."""
    variables = jax.tree_util.tree_map(jnp.array, variables)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        key=jax.random.key_data(key),
        free_delta=None if free_delta_shape is None else jnp.zeros(free_delta_shape, jnp.float32),
    )


def batch_cross_entropy(logits, labels):
    """Mean CE over the valid pixels of the whole batch (torch's cross_entropy(ignore_index))."""
    mask = losses.valid_mask(labels)
    return jnp.sum(losses.pixel_cross_entropy(logits, labels)) / jnp.maximum(jnp.sum(mask), 1)


def adversary(adv):
    """The kernel configuration (an `attacks.Attack`) for the `adv` section of a train config."""
    if adv.mode not in ADV_MODES:
        raise JaxsegError(f"unknown adv.mode {adv.mode!r}; choose one of {', '.join(ADV_MODES)}")
    if adv.attack not in attacks.PRESETS:
        raise JaxsegError(f"unknown adv.attack {adv.attack!r}; choose one of {', '.join(attacks.PRESETS)}")
    # checked even when unused, to catch mistakes early
    attacks.check_hyper(adv.eps, 1.0, attacks.PRESETS[adv.attack][0])
    if adv.mode == "none":
        return None
    if not 0.0 < adv.fraction <= 1.0:
        raise JaxsegError(f"adv.fraction must be in (0, 1], got {adv.fraction}")
    if adv.mode == "fgsm_rs":  # Wong et al. 2020: random start, one sign step of 1.25 eps
        return attacks.make("pgd", eps=adv.eps, steps=1, step_size=1.25 * adv.eps,
                            use_best=False, bn=adv.bn)
    if adv.mode == "free":
        if adv.replays < 1:
            raise JaxsegError(f"adv.replays must be >= 1, got {adv.replays}")
        return attacks.make("fgsm", eps=adv.eps, bn=adv.bn)
    return attacks.make(adv.attack, eps=adv.eps, steps=adv.steps, step_size=adv.step_size,
                        use_best=False, bn=adv.bn)


def all_finite(tree):
    """One boolean: every floating-point leaf of `tree` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def make_train_step(model, tx, config):
    """step(state, images, labels) -> (state, metrics) for `config.adv.mode`.

    A step whose loss or updated parameters / optimizer state are not finite leaves the state
    unchanged (but for the step counter and key) and reports finite=False; the loop stops on it,
    so the last checkpoint stays good.
    """
    aux_weight = config.aux_weight
    freeze_backbone = config.optim.freeze_backbone
    spec = adversary(config.adv)

    def loss_fn(params, batch_stats, images, labels, dropout_key):
        out, new = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                               mutable=["batch_stats"], rngs={"dropout": dropout_key})
        loss = batch_cross_entropy(out["out"], labels)
        if "aux" in out:
            loss = loss + aux_weight * batch_cross_entropy(out["aux"], labels)
        return loss, (new["batch_stats"], out["out"])

    # Only free AT reuses the input gradient; the other modes do not pay for it.
    free = config.adv.mode == "free"
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 2) if free else 0, has_aux=True)

    def update(state, images, labels, dropout_key):
        """One optimizer step on (images, labels); also returns d loss / d images (free AT)."""
        (loss, (batch_stats, logits)), grads = grad_fn(
            state.params, state.batch_stats, images, labels, dropout_key)
        grads, image_grads = grads if free else (grads, None)
        if freeze_backbone:  # a frozen backbone keeps its BN statistics too
            batch_stats = {**batch_stats, "backbone": state.batch_stats["backbone"]}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A finite loss can still give non-finite parameters (a huge learning rate): check
        # what would be kept, so that no checkpoint ever holds a NaN.
        finite = jnp.isfinite(loss) & all_finite((params, batch_stats, opt_state))
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda n, o: jnp.where(finite, n, o), new, old)
        state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              batch_stats=keep(batch_stats, state.batch_stats),
                              opt_state=keep(opt_state, state.opt_state))
        metrics = {"loss": loss, "finite": finite,
                   "pixel_acc": jnp.mean(losses.pixel_accuracy(logits, labels))}
        return state, metrics, image_grads

    def craft(state, images, labels, key):
        """Replace the first `fraction` of the batch by adversarial examples from the kernel."""
        count = max(1, round(config.adv.fraction * images.shape[0]))
        part_images, part_labels = images[:count], labels[:count]
        adv = attacks.presets.run(spec.static, model.apply, state.variables, part_images,
                                  part_labels, key, spec.eps, spec.step_size).x
        return jnp.concatenate([adv, images[count:]], axis=0)

    def standard_or_pgd_step(state, images, labels):
        key, attack_key, dropout_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)
        if spec is not None:
            images = craft(state, images, labels, attack_key)
        state, metrics, _ = update(state, images, labels, dropout_key)
        return state.replace(key=jax.random.key_data(key)), metrics

    def free_step(state, images, labels):
        """Shafahi et al. 2019: replay the batch `replays` times; each replay updates the
        parameters and takes one sign step on the perturbation with the same backward pass."""
        project = attacks.make_project("linf", spec.eps)
        direction = attacks.make_step("sign")

        def replay(_, carry):
            state, delta, previous = carry
            key, dropout_key = jax.random.split(jax.random.wrap_key_data(state.key))
            x = project(images + delta, images)
            state, metrics, image_grads = update(state, x, labels, dropout_key)
            metrics["finite"] = metrics["finite"] & previous["finite"]  # any bad replay counts
            delta = project(x + spec.eps * direction(image_grads), images) - images
            return state.replace(key=jax.random.key_data(key)), delta, metrics

        first = {"loss": jnp.zeros(()), "finite": jnp.ones((), bool), "pixel_acc": jnp.zeros(())}
        state, delta, metrics = jax.lax.fori_loop(
            0, config.adv.replays, replay, (state, state.free_delta, first))
        return state.replace(free_delta=delta), metrics

    return free_step if config.adv.mode == "free" else standard_or_pgd_step


def state_shardings(mesh, state):
    """Everything replicated but free AT's per-example perturbation (sharded like the batch)."""
    shardings = jax.tree_util.tree_map(lambda _: runtime.replicated(mesh), state)
    if state.free_delta is not None:
        shardings = shardings.replace(free_delta=runtime.batch_sharding(mesh))
    return shardings


def compile_step(step_fn, mesh, state):
    """jit over the mesh: batch sharded on 'data', state replicated and donated."""
    batch = runtime.batch_sharding(mesh)
    shardings = state_shardings(mesh, state)
    return jax.jit(step_fn, in_shardings=(shardings, batch, batch),
                   out_shardings=(shardings, runtime.replicated(mesh)), donate_argnums=0,
                   compiler_options=runtime.compiler_options())

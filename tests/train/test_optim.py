"""The optimizer reproduces torch.optim.SGD + torchvision's poly schedule step for step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from jaxseg import JaxsegError
from jaxseg.train import optim


def optim_config(**overrides):
    config = ml_collections.ConfigDict(dict(lr=0.02, momentum=0.9, weight_decay=1e-4, power=0.9,
                                            warmup_steps=0, head_lr_mult=1.0, aux_lr_mult=10.0,
                                            freeze_backbone=False))
    config.update(overrides)
    return config


def test_matches_torch_sgd_with_poly_lambda_lr_and_aux_group():
    rng = np.random.default_rng(0)
    init = {"backbone": rng.normal(size=(3,)), "classifier": rng.normal(size=(2,)),
            "aux_classifier": rng.normal(size=(2,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in init.items()} for _ in range(6)]
    total = 6

    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    torch_opt = torch.optim.SGD(
        [{"params": [tensors["backbone"]]}, {"params": [tensors["classifier"]]},
         {"params": [tensors["aux_classifier"]], "lr": 0.2}],
        lr=0.02, momentum=0.9, weight_decay=1e-4)
    # torchvision references/segmentation: LambdaLR with (1 - x / iters) ** 0.9 per iteration.
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda x: (1 - x / total) ** 0.9)

    tx = optim.make_optimizer(optim_config(), total)
    params = jax.tree_util.tree_map(jnp.asarray, init)
    state = tx.init(params)
    for grad in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(grad[k])
        torch_opt.step()
        scheduler.step()
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, grad), state, params)
        params = optax.apply_updates(params, updates)
    for k, t in tensors.items():
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_frozen_backbone_does_not_move_and_warmup_starts_at_zero():
    params = {"backbone": {"w": jnp.ones(3)}, "classifier": {"w": jnp.ones(2)}}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    tx = optim.make_optimizer(optim_config(freeze_backbone=True, weight_decay=0.0, warmup_steps=2), 10)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    assert np.all(updates["backbone"]["w"] == 0) and np.all(updates["classifier"]["w"] == 0)
    updates, state = tx.update(grads, state, params)
    assert np.all(updates["backbone"]["w"] == 0) and np.all(updates["classifier"]["w"] < 0)
    schedule = optim.poly_schedule(0.1, 10, warmup_steps=2)
    assert [float(schedule(t)) for t in (0, 1, 2)] == pytest.approx([0.0, 0.05, 0.1])
    assert float(schedule(10)) == pytest.approx(0.0)


def test_bad_values_are_user_errors():
    with pytest.raises(JaxsegError, match="optim.lr"):
        optim.make_optimizer(optim_config(lr=0.0), 10)
    with pytest.raises(JaxsegError, match="warmup_steps"):
        optim.poly_schedule(0.1, 10, warmup_steps=10)

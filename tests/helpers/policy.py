"""Checking a backend policy (jaxseg.runtime.conv_policy): trace a small FCN's loss under the
policy in force and count a primitive in it."""

import jax


def traced_loss(model, variables, x, primitive):
    """(times `primitive` occurs in the loss's jaxpr, (loss, parameter gradients)), traced
    now: a policy is read when jax traces, so each call sees the policy in force."""
    def loss(params):
        out = model.apply({**variables, "params": params}, x)
        return (out["out"] ** 2).mean() + (out["aux"] ** 2).mean()
    count = str(jax.make_jaxpr(loss)(variables["params"])).count(primitive)
    return count, jax.jit(jax.value_and_grad(loss))(variables["params"])

"""The torchvision segmentation recipe in optax: SGD with momentum, weight decay on every
parameter (as torch's SGD does), a per-step poly schedule with optional linear warmup, and per-part
learning-rate multipliers (torchvision's reference gives the aux head 10x) or a frozen backbone."""

import optax
from flax import traverse_util

from jaxseg.errors import JaxsegError

PARTS = ("backbone", "classifier", "aux_classifier")


def poly_schedule(lr, total_steps, power=0.9, warmup_steps=0):
    """lr * (1 - t / T) ** power per step, after `warmup_steps` of linear warmup from 0."""
    if total_steps < 1:
        raise JaxsegError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise JaxsegError(f"warmup_steps must be in [0, {total_steps}), got {warmup_steps}")
    decay = optax.polynomial_schedule(lr, 0.0, power, total_steps - warmup_steps)
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def sgd(lr, momentum, weight_decay, schedule_kwargs):
    """torch.optim.SGD semantics: g + wd * p, then momentum buffer, then -lr(t) * buffer."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(poly_schedule(lr, **schedule_kwargs), momentum=momentum or None),
    )


def make_optimizer(config, total_steps):
    """An optax transform from an `optim` ConfigDict.

    Keys: lr, momentum, weight_decay, power, warmup_steps, head_lr_mult (classifier),
    aux_lr_mult (aux_classifier), freeze_backbone.
    """
    if config.lr <= 0:
        raise JaxsegError(f"optim.lr must be > 0, got {config.lr}")
    schedule_kwargs = {"total_steps": total_steps, "power": config.power,
                       "warmup_steps": config.warmup_steps}
    multipliers = {"backbone": 1.0, "classifier": config.head_lr_mult,
                   "aux_classifier": config.aux_lr_mult}
    transforms = {part: sgd(config.lr * mult, config.momentum, config.weight_decay, schedule_kwargs)
                  for part, mult in multipliers.items()}
    transforms["frozen"] = optax.set_to_zero()

    def label(params):
        def part_of(path, _):
            part = path[0]
            if part == "backbone" and config.freeze_backbone:
                return "frozen"
            return part if part in PARTS else "classifier"
        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict({k: part_of(k, v) for k, v in flat.items()})

    return optax.multi_transform(transforms, label)

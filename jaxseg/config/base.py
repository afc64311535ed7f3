"""Every training option with its default. Experiment files in configs/ start from `base()`
and change what they need; `train.py --config.key=value` overrides on the command line.
`check(config)` rejects values that cannot work, before any data is read or anything compiled."""

import numbers

import ml_collections
from ml_collections import config_dict

from jaxseg.errors import JaxsegError


def base():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.steps = 1000  # training batches (free AT replays each batch adv.replays times)
    config.epochs = config_dict.placeholder(int)  # when set: steps = epochs * batches per epoch
    config.batch_size = 8  # global, over all devices and processes
    config.aux_weight = 0.5

    config.model = ml_collections.ConfigDict(dict(
        arch="fcn_resnet26_w16",
        num_classes=config_dict.placeholder(int),  # default: the training dataset's
        aux=config_dict.placeholder(bool),  # default: an aux head where torchvision has one
        dtype="auto",  # compute dtype: auto (bf16 on GPU/TPU, fp32 on CPU), float32, bfloat16
        remat="none",  # per-block rematerialisation: none | convs | full (less memory)
        init="",  # a jaxseg checkpoint (e.g. from `python -m jaxseg.cli.port import`) to start from
    ))
    config.data = ml_collections.ConfigDict(dict(
        train="synthetic",  # a jaxseg.data.get_dataset spec
        eval="",  # default: the train spec
        train_split="train",
        eval_split="val",
        kwargs=ml_collections.ConfigDict(),  # passed to get_dataset for both splits
        crop_size=(128, 128),
        short_side_range=config_dict.placeholder(tuple),  # random resize before the crop
        flip_prob=0.5,
        eval_short_side=config_dict.placeholder(int),
        eval_pad_to=config_dict.placeholder(tuple),
        workers=0,  # grain worker processes (0: threads in this process)
        skip_bad=False,  # folder formats: unreadable examples become ignored blanks
    ))
    config.optim = ml_collections.ConfigDict(dict(
        lr=0.02, momentum=0.9, weight_decay=1e-4, power=0.9, warmup_steps=0,
        head_lr_mult=1.0, aux_lr_mult=1.0, freeze_backbone=False,
    ))
    config.adv = ml_collections.ConfigDict(dict(
        mode="none",  # none | pgd | fgsm_rs | free
        attack="pgd",  # kernel preset for mode pgd: pgd, bim, pgd_l2, segpgd, cospgd, fgsm
        eps=8 / 255,
        step_size=config_dict.placeholder(float),  # default: the preset's rule
        steps=3,
        fraction=1.0,  # share of each batch replaced by adversarial examples (0.5 = mixed)
        replays=4,  # free adversarial training's minibatch replays
        bn="running",  # BatchNorm during the attack: running | batch
    ))
    config.checkpoint = ml_collections.ConfigDict(dict(every=200, keep=3))
    config.log_every = 10
    config.eval = ml_collections.ConfigDict(dict(
        every=500,  # also at the end of training
        num_images=32,  # held-out subset
        batch_size=8,
        attack="pgd",  # robust evaluation; '' for clean only
        eps=config_dict.placeholder(float),  # default: adv.eps
        steps=10,
        samples=4,  # prediction images written per evaluation
    ))
    return config


# key -> smallest allowed value, for the integer options
MINIMUM = {"steps": 1, "batch_size": 1, "log_every": 1, "checkpoint.every": 1,
           "checkpoint.keep": 1, "eval.every": 1, "eval.num_images": 1, "eval.batch_size": 1,
           "eval.steps": 1, "eval.samples": 0, "adv.steps": 1, "adv.replays": 1}


# key -> allowed values, for the options that name a choice
CHOICES = {"model.dtype": ("auto", "float32", "bfloat16"), "model.remat": ("none", "convs", "full")}


def check(config):
    """One-line JaxsegErrors for integer options out of range (keep 0 would delete the final
    model; every 0 would divide by zero after minutes of compiling)."""
    for key, smallest in MINIMUM.items():
        node = config
        for part in key.split("."):
            node = node[part]
        if key == "steps" and config.epochs is not None:
            continue
        if isinstance(node, bool) or not isinstance(node, numbers.Integral) or node < smallest:
            raise JaxsegError(f"config key {key!r} must be an integer >= {smallest}, got {node!r}")
    if config.epochs is not None and (not isinstance(config.epochs, int) or config.epochs < 1):
        raise JaxsegError(f"config key 'epochs' must be an integer >= 1, got {config.epochs!r}")
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        if config[section][name] not in allowed:
            raise JaxsegError(f"config key {key!r} must be one of {', '.join(allowed)}, got "
                              f"{config[section][name]!r}")
    return config

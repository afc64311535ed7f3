"""Quick: the smallest model on tiny built-in scenes, a few steps; seconds on a CPU. The tests
train with it, and it is the config to try a change with before a real run.

    python train.py --config configs/quick.py --workdir workdirs/quick
    python train.py --config configs/quick.py --workdir workdirs/quick_at --config.adv.mode=pgd
"""

from jaxseg.config import base


def get_config():
    config = base()
    config.model.arch = "fcn_resnet14_w8"
    config.data.kwargs.size = (32, 32)
    config.data.kwargs.num_examples = 16
    config.data.crop_size = (32, 32)
    config.batch_size = 8
    config.steps = 2
    config.log_every = 1
    config.checkpoint.every = 100
    config.eval.every = 1000
    config.eval.attack = ""
    config.eval.samples = 0
    config.eval.num_images = 8
    return config

"""Demo: a small FCN on the built-in synthetic scenes, a few CPU minutes.

    python train.py --config configs/demo.py --workdir workdirs/demo_standard
    python train.py --config configs/demo.py --workdir workdirs/demo_at --config.adv.mode=pgd
"""

from jaxseg.config import base


def get_config():
    config = base()
    config.model.arch = "fcn_resnet26_w16"
    config.data.train = "synthetic"
    config.data.kwargs.size = (96, 96)
    config.data.crop_size = (96, 96)
    config.data.short_side_range = (80, 120)
    config.batch_size = 8
    config.steps = 300
    config.optim.lr = 0.02
    config.adv.eps = 8 / 255
    config.adv.steps = 3
    config.checkpoint.every = 100
    config.eval.every = 150
    config.eval.num_images = 32
    config.eval.batch_size = 8
    return config

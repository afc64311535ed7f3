"""The paper's AT-50: FCN-ResNet50 adversarially trained on COCO 2017 (VOC classes), 9 epochs,
L-inf PGD. The paper lost its exact adversary; we use eps 8/255, 3 steps of 2.5 * eps / 3 from a
random start, every example replaced (Madry). Change with --config.adv.eps=4/255,
--config.adv.steps=7, --config.adv.fraction=0.5 (mixed batches).

    python train.py --config configs/coco_fcn50_at.py --workdir workdirs/coco_fcn50_at \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r50
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from coco_fcn50_standard import get_config as standard  # noqa: E402


def get_config():
    config = standard()
    config.epochs = 9
    config.adv.mode = "pgd"
    config.adv.attack = "pgd"
    config.adv.eps = 8 / 255
    config.adv.steps = 3
    config.adv.fraction = 1.0
    return config

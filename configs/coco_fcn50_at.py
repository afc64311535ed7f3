"""The paper's AT-50: FCN-ResNet50 adversarially trained on COCO 2017 (VOC classes), 9 epochs,
L-inf PGD. The paper lost its exact adversary; we use eps 8/255, 3 steps of 2.5 * eps / 3 from a
random start, every example replaced (Madry). Change with --config.adv.eps=4/255,
--config.adv.steps=7, --config.adv.fraction=0.5 (mixed batches).

    python train.py --config configs/coco_fcn50_at.py --workdir workdirs/coco_fcn50_at \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r50
"""

from . import coco_fcn50_standard


def get_config():
    config = coco_fcn50_standard.get_config()
    config.epochs = 9
    config.adv.mode = "pgd"
    config.adv.attack = "pgd"
    config.adv.eps = 8 / 255
    config.adv.steps = 3
    config.adv.fraction = 1.0
    return config

"""The paper's AT-101: FCN-ResNet101, the AT-50 adversary, 3 epochs.

    python -m jaxseg.cli.port import resnet101-63fe2227.pth ckpt/imagenet_r101 --num-classes 21
    python train.py --config configs/coco_fcn101_at.py --workdir workdirs/coco_fcn101_at \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r101
"""

from . import coco_fcn50_at


def get_config():
    config = coco_fcn50_at.get_config()
    config.model.arch = "fcn_resnet101"
    config.epochs = 3
    return config

"""DeepLabV3-ResNet50 adversarially trained on COCO 2017 (VOC classes) with the AT-50 adversary
(configs/coco_fcn50_at.py: 9 epochs, L-inf PGD eps 8/255, 3 steps of 2.5 * eps / 3 from a random
start, every example replaced): the paper's AT-50 recipe on the architecture most robustness
papers on segmentation attack.

    python -m jaxseg.cli.port import resnet50-0676ba61.pth ckpt/imagenet_r50_deeplab \
        --arch deeplabv3_resnet50 --num-classes 21
    python train.py --config configs/coco_deeplabv3_r50_at.py \
        --workdir workdirs/coco_deeplabv3_r50_at \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r50_deeplab
"""

from . import coco_fcn50_at


def get_config():
    config = coco_fcn50_at.get_config()
    config.model.arch = "deeplabv3_resnet50"
    return config

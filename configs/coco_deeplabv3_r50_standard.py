"""DeepLabV3-ResNet50 on COCO 2017 (20 VOC classes + background) with torchvision's reference
recipe, which is FCN-ResNet50's (configs/coco_fcn50_standard.py: SGD momentum 0.9, weight decay
1e-4, lr 0.02 for a global batch of 32, poly schedule, 30 epochs, aux loss 0.5 with a 10x lr on
the aux head, 480 px crops, eval at short side 520) with ASPP in place of the FCN head. Backbone
from torchvision's ImageNet ResNet-50, ported with DeepLabV3's fresh heads:

    python -m jaxseg.cli.port import resnet50-0676ba61.pth ckpt/imagenet_r50_deeplab \
        --arch deeplabv3_resnet50 --num-classes 21
    python train.py --config configs/coco_deeplabv3_r50_standard.py \
        --workdir workdirs/coco_deeplabv3_r50_standard \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r50_deeplab
"""

from . import coco_fcn50_standard


def get_config():
    config = coco_fcn50_standard.get_config()
    config.model.arch = "deeplabv3_resnet50"
    return config

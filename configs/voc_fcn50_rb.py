"""The paper's "RB" model: FCN-ResNet50 whose backbone is a robustness-library ImageNet ResNet-50
adversarially trained with L2 PGD eps 3.0, frozen; only the heads are trained, 20 epochs on
PASCAL VOC 2012 (standard training), with the same torchvision recipe as the "Pre" model.

    python -m jaxseg.cli.port import imagenet_l2_3_0.pt ckpt/rb_init --num-classes 21
    python train.py --config configs/voc_fcn50_rb.py --workdir workdirs/voc_fcn50_rb \
        --config.data.train=voc:/data/VOCdevkit/VOC2012 --config.model.init=ckpt/rb_init
"""

from . import coco_fcn50_standard


def get_config():
    config = coco_fcn50_standard.get_config()
    config.data.train = "voc:/data/VOCdevkit/VOC2012"
    config.data.eval_pad_to = (520, 1040)  # VOC images are at most 500 px a side
    config.epochs = 20
    config.optim.freeze_backbone = True
    config.checkpoint.every = 500
    config.log_every = 20
    config.eval.every = 1000
    return config

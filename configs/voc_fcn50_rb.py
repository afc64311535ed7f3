"""The paper's "RB" model: FCN-ResNet50 whose backbone is a robustness-library ImageNet ResNet-50
adversarially trained with L2 PGD eps 3.0, frozen; only the heads are trained, 20 epochs on
PASCAL VOC 2012 (standard training).

    python -m jaxseg.port import imagenet_l2_3_0.pt ckpt/rb_init --num-classes 21
    python train.py --config configs/voc_fcn50_rb.py --workdir workdirs/voc_fcn50_rb \
        --config.data.train=voc:/data/VOCdevkit/VOC2012 --config.model.init=ckpt/rb_init
"""

from jaxseg.config import base


def get_config():
    config = base()
    config.model.arch = "fcn_resnet50"
    config.model.num_classes = 21
    config.data.train = "voc:/data/VOCdevkit/VOC2012"
    config.data.crop_size = (480, 480)
    config.data.short_side_range = (260, 1040)
    config.data.eval_short_side = 520
    config.data.eval_pad_to = (520, 1040)
    config.data.workers = 8
    config.batch_size = 32
    config.epochs = 20
    config.optim.lr = 0.02
    config.optim.aux_lr_mult = 10.0
    config.optim.freeze_backbone = True
    config.checkpoint.every = 500
    config.log_every = 20
    config.eval.every = 1000
    config.eval.num_images = 500
    config.eval.batch_size = 32
    config.eval.eps = 8 / 255
    return config

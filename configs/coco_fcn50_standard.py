"""The paper's "Pre" model: FCN-ResNet50 on COCO 2017 (20 VOC classes + background) with
torchvision's reference recipe: SGD momentum 0.9, weight decay 1e-4, lr 0.02 for a global batch
of 32, poly schedule (power 0.9) per step, 30 epochs, aux loss weight 0.5 with a 10x lr on the aux
head, 480 px crops after a random short-side resize in [260, 1040] and a flip, eval at short
side 520. Backbone from torchvision's ImageNet ResNet-50, ported:

    python -m jaxseg.cli.port import resnet50-0676ba61.pth ckpt/imagenet_r50 --num-classes 21
    python train.py --config configs/coco_fcn50_standard.py --workdir workdirs/coco_fcn50_standard \
        --config.data.train=coco:/data/coco --config.model.init=ckpt/imagenet_r50

On a pod, run the same command on every host (see train.py for the multi-host flags). Eval
batches pad each image (short side 520) to 520x1664 with ignored labels.
"""

from jaxseg.config import base


def get_config():
    config = base()
    config.model.arch = "fcn_resnet50"
    config.model.num_classes = 21
    config.data.train = "coco:/data/coco"
    config.data.train_split = "train"
    config.data.eval_split = "val"
    config.data.crop_size = (480, 480)
    config.data.short_side_range = (260, 1040)
    config.data.eval_short_side = 520
    config.data.eval_pad_to = (520, 1664)
    config.data.workers = 8
    config.batch_size = 32
    config.epochs = 30
    config.optim.lr = 0.02
    config.optim.aux_lr_mult = 10.0
    config.checkpoint.every = 1000
    config.log_every = 50
    config.eval.every = 5000
    config.eval.num_images = 500
    config.eval.batch_size = 32
    config.eval.attack = "pgd"
    config.eval.eps = 8 / 255
    return config

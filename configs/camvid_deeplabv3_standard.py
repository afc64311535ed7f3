"""CamVid (240x180, 11 classes), standard training of the small DeepLabV3 (deeplabv3_resnet26_w16:
the small FCN's backbone with a 64-channel ASPP head), CPU scale; everything else as
camvid_standard.py, so that the two compare architectures only.

    python train.py --config configs/camvid_deeplabv3_standard.py \
        --workdir workdirs/camvid_deeplabv3_standard
"""

from . import camvid_standard


def get_config():
    config = camvid_standard.get_config()
    config.model.arch = "deeplabv3_resnet26_w16"
    return config

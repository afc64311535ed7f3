"""Test-only helpers around PyTorch/torchvision (references, never jaxseg dependencies)."""

import contextlib

import numpy as np
import torch
from PIL import Image
from tests.helpers import paths

CAMVID = paths.CAMVID


@contextlib.contextmanager
def _no_fake_registration():
    """torchvision's compiled ops do not load against CPU torch; its Python models do. Its import
    registers fake kernels for those ops, which fails, so make the registration a no-op."""
    original = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    try:
        yield
    finally:
        torch.library.register_fake = original


with _no_fake_registration():
    import torchvision  # noqa: F401
    from torchvision.models import resnet50, resnet101
    from torchvision.models.segmentation import fcn_resnet50, fcn_resnet101

TORCH_FCN = {"fcn_resnet50": fcn_resnet50, "fcn_resnet101": fcn_resnet101}
TORCH_RESNET = {"fcn_resnet50": resnet50, "fcn_resnet101": resnet101}


def randomize(module, seed):
    """Every parameter and BN statistic re-drawn (not init defaults), scaled to stay finite."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            shape = tensor.shape
            if name.endswith("running_var"):
                new = 0.5 + torch.rand(shape, generator=generator)
            elif name.endswith("running_mean") or name.endswith("bias"):
                new = 0.1 * torch.randn(shape, generator=generator)
            elif tensor.ndim == 1:  # BN weight; < 1 so that 100 residual blocks stay finite
                new = 0.2 + 0.4 * torch.rand(shape, generator=generator)
            else:  # conv / fc weight, He scaled
                fan_in = int(np.prod(shape[1:]))
                new = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
            tensor.copy_(new)
    return module.eval()


def torch_fcn(arch, seed, num_classes=21, aux=True):
    model = TORCH_FCN[arch](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    return randomize(model, seed)


def torch_resnet(arch, seed):
    return randomize(TORCH_RESNET[arch](weights=None), seed)


def camvid_image(height, width, index=0):
    """A street scene, resized, float [0, 1], NHWC batch of 1: the shared CamVid copy's val image
    `index` where that copy exists (the project's machines, CI), else built-in synthetic scene
    `index` (a clone without ../shared). Parity does not depend on which: the comparison is
    between two implementations on the same input."""
    names = sorted((CAMVID / "val").glob("*.png"))
    if names:
        image = Image.open(names[index]).convert("RGB")
    else:
        from jaxseg.data import SyntheticScenes

        image = Image.fromarray(np.asarray(SyntheticScenes("val", (180, 240))[index]["image"]))
    image = image.resize((width, height), Image.BILINEAR)
    return (np.asarray(image, np.float32) / 255.0)[None]


def state_numpy(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def normalize(images_nchw):
    """torchvision models take ImageNet-normalised input; jaxseg models normalise inside."""
    return (images_nchw - IMAGENET_MEAN) / IMAGENET_STD


class PixelLogits(torch.nn.Module):
    """A torchvision FCN as torchattacks wants it: [0,1] pixels in (normalised here, as jaxseg
    models do inside), plain 'out' logits out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(normalize(x))["out"]


def run_torch(model, images_nhwc):
    """A torchvision FCN on [0,1] NHWC pixels, as jaxseg's FCN sees them; NHWC outputs."""
    with torch.no_grad():
        out = model(normalize(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)))
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}

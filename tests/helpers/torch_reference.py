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
    from torchvision.models import mobilenet_v3_large, resnet50, resnet101
    from torchvision.models import segmentation as _segmentation

# torchvision's six segmentation models by name, and each one's ImageNet backbone.
TORCH_MODELS = {name: getattr(_segmentation, name) for name in (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")}
TORCH_FCN = {name: TORCH_MODELS[name] for name in ("fcn_resnet50", "fcn_resnet101")}
TORCH_RESNET = {"fcn_resnet50": resnet50, "fcn_resnet101": resnet101,
                "deeplabv3_resnet50": resnet50, "deeplabv3_resnet101": resnet101}
TORCH_BACKBONE = {**TORCH_RESNET,
                  "deeplabv3_mobilenet_v3_large": lambda **kw: mobilenet_v3_large(**kw),
                  "lraspp_mobilenet_v3_large": lambda **kw: mobilenet_v3_large(**kw)}


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


def torch_model(arch, seed, num_classes=21, aux=True):
    """torchvision's `arch` (one of TORCH_MODELS) with randomised weights and BN statistics, in
    eval mode (LR-ASPP has no aux head: `aux` is ignored for it)."""
    kwargs = {} if arch.startswith("lraspp") else {"aux_loss": aux}
    model = TORCH_MODELS[arch](weights=None, weights_backbone=None, num_classes=num_classes,
                               **kwargs)
    return randomize(model, seed)


torch_fcn = torch_model


def torch_resnet(arch, seed):
    return randomize(TORCH_RESNET[arch](weights=None), seed)


def torch_backbone(arch, seed):
    """The ImageNet classifier whose features `arch` uses (ResNet / MobileNetV3-Large; the
    segmentation model dilates them, which changes no weight)."""
    return randomize(TORCH_BACKBONE[arch](weights=None), seed)


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


def padding_tap_flops(model, images_nchw):
    """[(conv module, FLOPs)] that torch's FLOP counter gives each Conv2d's forward for the taps
    falling on its zero padding. XLA's cost analysis does not count those (nor does jaxseg run
    them where a dilation reaches past the whole input), so they are taken off torch's count
    before the two are compared."""
    found = []

    def valid_taps(size, out_size, kernel, stride, padding, dilation):
        return sum(0 <= o * stride - padding + t * dilation < size
                   for o in range(out_size) for t in range(kernel))

    def hook(module, inputs, output):
        n, channels, height, width = inputs[0].shape
        out_h, out_w = output.shape[2:]
        (kh, kw), (sh, sw) = module.kernel_size, module.stride
        (ph, pw), (dh, dw) = module.padding, module.dilation
        valid = (valid_taps(height, out_h, kh, sh, ph, dh)
                 * valid_taps(width, out_w, kw, sw, pw, dw))
        padded = out_h * out_w * kh * kw - valid
        found.append((module, 2 * n * padded * channels // module.groups * module.out_channels))

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(images_nchw)
    finally:
        for h in hooks:
            h.remove()
    return found

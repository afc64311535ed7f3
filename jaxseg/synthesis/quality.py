"""Numbers for "perceptually aligned": how well a fill matches the pixels it replaced.

All functions take float images in [0, 1], [N, H, W, C] (or one [H, W, C] image), and a hole
mask [N, H, W] (True = synthesised pixels); they return one value per example (numpy float64).
Only the hole counts, so a method that leaves the known pixels alone is not rewarded for them.

* `psnr`: 10 log10(1 / MSE) over the hole's values, capped at `PSNR_CAP` dB (identical -> cap).
* `psnr_lowpass`: PSNR of the two after the same Gaussian blur (sigma 2, inside the hole only):
  agreement of coarse colour and shape, blind to fine texture and pixel noise.
* `ssim`: the mean over hole pixels of Wang et al.'s (2004) SSIM map, with local statistics
  computed by a Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11x11) restricted to the
  hole (normalised convolution: window weights outside the hole are zero and the rest is
  re-normalised), per channel, C1 = (0.01)^2, C2 = (0.03)^2 for the [0, 1] range; channels
  averaged. Restricting the window keeps the untouched surroundings out of the score.
* `hole_accuracy`: fraction of the hole's labelled pixels that a model segments as the target.
* `high_frequency_ratio`: energy of the fill minus its Gaussian blur (sigma 1, again inside the
  hole only) over the fill's energy around its own mean. White noise scores about 0.76 (the
  residual keeps 1 - 2 g0 + sum g^2 of its energy, g the 2-D kernel), smooth fills near 0, a
  flat fill exactly 0.
* `outside_rmse`: RMS change of the known pixels (how well the penalty kept them).
"""

import numpy as np

from jaxseg.labels import IGNORE

PSNR_CAP = 100.0
LOWPASS_SIGMA = 2.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
HF_SIGMA = 1.0
C1 = 0.01**2
C2 = 0.03**2


def _batch(images, mask):
    """float64 [N, H, W, C] images and bool [N, H, W] masks (single examples get a batch axis)."""
    images = np.asarray(images, np.float64)
    if images.ndim == 3:
        images = images[None]
    if mask is None:
        mask = np.ones(images.shape[:3], bool)
    mask = np.asarray(mask, bool)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape != images.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match images {images.shape}")
    return images, mask


def gaussian_kernel(sigma, truncate=SSIM_TRUNCATE):
    """Normalised 1-D Gaussian of radius ceil(truncate * sigma)."""
    radius = int(np.ceil(truncate * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def _filter(values, kernel):
    """Separable zero-padded filtering of [N, H, W, C] along H and W."""
    radius = len(kernel) // 2
    padded = np.pad(values, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    height, width = values.shape[1:3]
    rows = sum(w * padded[:, i:i + height] for i, w in enumerate(kernel))
    return sum(w * rows[:, :, j:j + width] for j, w in enumerate(kernel))


def masked_blur(values, mask, sigma, truncate=SSIM_TRUNCATE):
    """Gaussian-weighted local mean using only pixels inside `mask` (normalised convolution).

    values [N, H, W, C], mask [N, H, W] -> [N, H, W, C]; meaningful at pixels inside the mask."""
    kernel = gaussian_kernel(sigma, truncate)
    weights = mask[..., None].astype(np.float64)
    total = _filter(values * weights, kernel)
    norm = _filter(weights, kernel)
    return total / np.maximum(norm, 1e-12)


def _hole_mean(values, mask):
    """Mean of [N, H, W, C] values over the hole pixels and channels, per example."""
    weights = np.broadcast_to(mask[..., None], values.shape)
    count = weights.sum(axis=(1, 2, 3))
    return (values * weights).sum(axis=(1, 2, 3)) / np.maximum(count, 1)


def mse(x, ref, mask=None):
    x, mask = _batch(x, mask)
    ref, _ = _batch(ref, mask)
    return _hole_mean((x - ref) ** 2, mask)


def psnr(x, ref, mask=None, cap=PSNR_CAP):
    """Peak signal-to-noise ratio (peak 1) over the hole, dB, at most `cap`."""
    error = mse(x, ref, mask)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(1.0 / error)
    return np.minimum(value, cap)


def psnr_lowpass(x, ref, mask=None, sigma=LOWPASS_SIGMA, cap=PSNR_CAP):
    """PSNR of both images blurred (Gaussian `sigma`, window restricted to the hole)."""
    x, mask = _batch(x, mask)
    ref, _ = _batch(ref, mask)
    return psnr(masked_blur(x, mask, sigma), masked_blur(ref, mask, sigma), mask, cap)


def ssim(x, ref, mask=None, sigma=SSIM_SIGMA):
    """Mean SSIM over the hole with a Gaussian window restricted to the hole (module doc)."""
    x, mask = _batch(x, mask)
    ref, _ = _batch(ref, mask)
    blur = lambda v: masked_blur(v, mask, sigma)  # noqa: E731
    mu_x, mu_y = blur(x), blur(ref)
    var_x = np.maximum(blur(x * x) - mu_x**2, 0.0)
    var_y = np.maximum(blur(ref * ref) - mu_y**2, 0.0)
    cov = blur(x * ref) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + C1) * (2 * cov + C2)
    denominator = (mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2)
    return _hole_mean(numerator / denominator, mask)


def high_frequency_ratio(x, mask=None, sigma=HF_SIGMA):
    """Share of the fill's energy (around its mean) above a Gaussian blur's pass band."""
    x, mask = _batch(x, mask)
    detail = x - masked_blur(x, mask, sigma)
    centred = x - _hole_mean(x, mask)[:, None, None, None]
    energy = _hole_mean(centred**2, mask)
    high = _hole_mean(detail**2, mask)
    return np.where(energy > 1e-12, high / np.maximum(energy, 1e-12), 0.0)


def hole_accuracy(predictions, labels, mask=None, ignore=IGNORE):
    """Fraction of the hole's labelled pixels predicted as their label ([N]; NaN if none)."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim == 2:
        predictions, labels = predictions[None], labels[None]
    if mask is None:
        mask = np.ones(labels.shape, bool)
    mask = np.asarray(mask, bool).reshape(labels.shape)
    counted = mask & (labels != ignore)
    hits = ((predictions == labels) & counted).sum(axis=(1, 2))
    total = counted.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def outside_rmse(x, ref, mask):
    """RMS change of the pixels outside the hole ([N]; 0 if the hole is everything)."""
    mask = np.asarray(mask, bool)
    return np.sqrt(mse(x, ref, ~mask))


def report(result, original, mask, predictions, labels):
    """All metrics for a batch as a list of per-example dicts (JSON-ready floats or None).

    result, original: [N, H, W, 3] in [0, 1]; mask: [N, H, W] hole; predictions: the model's
    argmax on `result`; labels: the target segmentation it was pushed toward."""
    result, mask = _batch(result, mask)
    original, _ = _batch(original, mask)
    columns = {
        "psnr": psnr(result, original, mask),
        "psnr_lowpass": psnr_lowpass(result, original, mask),
        "ssim": ssim(result, original, mask),
        "hole_accuracy": hole_accuracy(predictions, labels, mask),
        "accuracy": hole_accuracy(predictions, labels),
        "high_frequency": high_frequency_ratio(result, mask),
        "high_frequency_original": high_frequency_ratio(original, mask),
        "outside_rmse": outside_rmse(result, original, mask),
    }
    rows = []
    for i in range(len(result)):
        rows.append({name: (None if not np.isfinite(v[i]) else float(v[i]))
                     for name, v in columns.items()})
    return rows


def summarize(rows):
    """Mean of every metric over the rows (skipping None)."""
    if not rows:
        return {}
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows if r[name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out

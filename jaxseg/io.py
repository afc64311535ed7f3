"""Files in and out, one way each.

Writing: nobody ever sees half a file. Everything is written under a temporary name beside the
target and renamed atomically; the temporary file is removed if writing fails; the result gets
the permissions the umask gives a new file (not mkstemp's 0600).

Reading: `read_image` (uint8 RGB) and `read_label_values` (the raw single-channel values of a
label PNG) are the only image readers; every error names the file in one line.
"""

import contextlib
import json
import os
import tempfile

import numpy as np
from PIL import Image

from jaxseg.errors import JaxsegError

LABEL_MODES = ("L", "P", "I;16", "I")


def _umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yield a temporary path in `path`'s directory (created if needed); on success it replaces
    `path`, on error it is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def prepare_dir(path, what="directory"):
    """Create the output directory `path` if needed and check that it can be written; one-line
    errors for an empty name, a file in its place or a read-only place. Returns the absolute
    path."""
    if not str(path).strip():
        raise JaxsegError(f"{what} must not be empty")
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise JaxsegError(f"{what} {path} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise JaxsegError(f"{what} {path} cannot be written: {err.strerror}") from None
    return path


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2))


def save_png(image, path):
    """Write a PIL image or a uint8 / [0, 1] float array as PNG."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8(image))
    with atomic_path(path, ".png") as tmp:
        image.save(tmp, format="PNG")


def to_uint8(image):
    """float [0, 1] or uint8 array -> uint8."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def read_image(path):
    """uint8 [H, W, 3] RGB pixels; a JaxsegError naming the file if it cannot be decoded.

    Conversions, explicitly: grayscale is repeated over the channels; 16-bit grayscale is
    scaled to 8 bits (65535 -> 255; Pillow would clip it to white); a palette is looked up;
    alpha (RGBA, LA, a palette's transparency) is dropped, the stored colours kept; Pillow reads
    16-bit RGB as its high bytes. Float and 32-bit integer images are refused.
    """
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so truncation is caught here
            return _to_rgb(img, path)
    except FileNotFoundError:
        raise JaxsegError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise JaxsegError(f"cannot read image {path}: it is a directory") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise JaxsegError(f"cannot read image {path}: {err}") from None


def _to_rgb(img, path):
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        if img.mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise JaxsegError(f"cannot read image {path}: 32-bit integer pixels; save it as "
                              "8- or 16-bit PNG")
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "F":
        raise JaxsegError(f"cannot read image {path}: floating-point pixels; save it as 8- or "
                          "16-bit PNG")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow's route for a palette with transparency
    return np.asarray(img.convert("RGB"))


def _read(path, what, modes=None):
    """The stored values of an image file, as numpy; `modes`: the image modes accepted."""
    try:
        with Image.open(path) as img:
            img.load()
            if modes and img.mode not in modes:
                raise JaxsegError(f"{what} {path} has image mode {img.mode!r}; expected a "
                                  "single-channel ('L') or palette ('P') PNG of class ids")
            return np.asarray(img)
    except FileNotFoundError:
        raise JaxsegError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise JaxsegError(f"cannot read {what} {path}: it is a directory") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise JaxsegError(f"cannot read {what} {path}: {err}") from None


def read_label_values(path):
    """The raw values [H, W] of a single-channel ('L', 'P', 16-bit) label PNG, as stored."""
    return _read(path, "label", LABEL_MODES)


def read_mask(path):
    """A hole mask [H, W] from an image file: True where any channel is non-zero."""
    values = _read(path, "mask")
    return values.reshape(values.shape[0], values.shape[1], -1).any(axis=-1)

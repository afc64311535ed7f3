"""Files in and out: atomic writes with the umask's mode, every image mode read explicitly, one
line for what cannot be read or written."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxseg import JaxsegError, io


def write_png16(path, values, color_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): color type 0 gray,
    2 RGB, 4 gray + alpha, 6 RGBA."""
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RAMP = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 in 256 steps


def test_16_bit_grayscale_is_scaled_not_clipped_to_white(tmp_path):
    write_png16(tmp_path / "g.png", RAMP, 0)
    image = io.read_image(tmp_path / "g.png")
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], (RAMP // 257).astype(np.uint8))  # exact ramp
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (4, 2)])
def test_16_bit_color_and_alpha_keep_the_stored_colours(tmp_path, color_type, channels):
    planes = [RAMP, 65535 - RAMP, RAMP // 2, np.full_like(RAMP, 1000)][:channels]
    if channels == 2:  # gray + alpha
        planes = [RAMP, np.full_like(RAMP, 1000)]
    write_png16(tmp_path / "c.png", np.stack(planes, -1), color_type)
    image = io.read_image(tmp_path / "c.png")
    color = planes[:3] if channels >= 3 else [RAMP] * 3
    expected = np.stack([(p >> 8).astype(np.uint8) for p in color], -1)  # alpha dropped
    np.testing.assert_array_equal(image, expected)


def test_grayscale_palette_and_rgba_are_converted_explicitly(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "l.png"), np.repeat(gray[..., None], 3, -1))

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: the colour is kept
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert (io.read_image(tmp_path / "rgba.png") == [200, 0, 0]).all()

    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(io.read_image(tmp_path / "p.png"),
                                  [[[10, 20, 30], [200, 100, 50]], [[200, 100, 50], [10, 20, 30]]])


def test_float_images_are_refused_in_one_line(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(JaxsegError, match="f.tiff: floating-point pixels"):
        io.read_image(tmp_path / "f.tiff")


def test_16_bit_labels_keep_their_values(tmp_path):
    labels = np.array([[0, 1], [300, 255]], np.uint16)
    Image.fromarray(labels).save(tmp_path / "label.png")
    np.testing.assert_array_equal(io.read_label_values(tmp_path / "label.png"), labels)


def test_atomic_write_gets_the_umask_mode_and_never_leaves_half_a_file(tmp_path):
    old = os.umask(0o027)
    try:
        io.write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    io.write_text(tmp_path / "b.txt", "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "b.txt") as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "b.txt").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


def test_prepare_dir_names_what_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(JaxsegError, match="output .*file is a file, not a directory"):
        io.prepare_dir(tmp_path / "file", "output")
    with pytest.raises(JaxsegError, match="output must not be empty"):
        io.prepare_dir("", "output")
    assert io.prepare_dir(tmp_path / "new" / "dir") == str(tmp_path / "new" / "dir")

"""core/video_io.py reads the pixel formats Pillow opens beyond 8-bit RGB: right values, or one clear error."""

import numpy as np
import pytest
from PIL import Image

from core.video_io import read_video


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    """Pillow's convert("RGB") clips mode I;16 at 255: a 16-bit gradient came back black then white."""
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)[None].repeat(8, axis=0)  # (8, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I;16")
    frames = read_video(tmp_path / "ramp16.png")
    assert frames.shape == (1, 8, 64, 3) and frames.dtype == np.uint8
    expected = np.linspace(0, 255, 64)
    assert np.abs(frames[0, 3, :, 1].astype(float) - expected).max() <= 1.0
    assert (frames[0, :, :, 0] == frames[0, :, :, 2]).all()


def test_a_float_image_is_refused_with_one_line(tmp_path):
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="floating-point images have no fixed range"):
        read_video(tmp_path / "f.tiff")


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "1"])
def test_eight_bit_modes_convert_as_pillow_does(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    image.save(tmp_path / "x.tiff")
    frames = read_video(tmp_path / "x.tiff")
    np.testing.assert_array_equal(frames[0], np.asarray(Image.open(tmp_path / "x.tiff").convert("RGB")))

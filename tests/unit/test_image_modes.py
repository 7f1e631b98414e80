"""core/video_io.py and core/pil_frames.py read Pillow's pixel formats beyond 8-bit RGB: right values, or one error."""

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


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_laid_over_black(tmp_path, mode):
    """Pillow's convert("RGB") drops the alpha: a transparent PNG came back showing the colour its invisible pixels
    stored (white here). Opaque pixels keep their colour, half-transparent ones are half as bright."""
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere ...
    rgba[:, :2, 3] = 0  # ... invisible on the left,
    rgba[:, 2:4, 3] = 128  # half-covering in the middle,
    rgba[:, 4:, 3] = 255  # opaque on the right
    image = Image.fromarray(rgba, "RGBA")
    image = image if mode == "RGBA" else image.convert(mode)
    image.save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == mode
    frame = read_video(tmp_path / "x.png")[0]  # (H, W, 3)
    assert frame.shape == (4, 6, 3)
    assert (frame[:, :2] == 0).all() and (frame[:, 4:] == 255).all()
    assert (np.abs(frame[:, 2:4].astype(int) - 128) <= 1).all()


def test_a_palette_image_with_a_transparent_index_is_laid_over_black(tmp_path):
    p = Image.new("P", (4, 4), 1)
    p.putpalette([255, 255, 255, 200, 10, 10] + [0, 0, 0] * 254)  # index 0 white, index 1 red
    p.putpixel((0, 0), 0)
    p.info["transparency"] = 0  # index 0 is see-through
    p.save(tmp_path / "p.png")
    frame = read_video(tmp_path / "p.png")[0]
    assert (frame[0, 0] == 0).all() and (frame[1, 1] == [200, 10, 10]).all()


@pytest.mark.parametrize("pixels", [40 * 40, 60 * 60])  # past MAX_IMAGE_PIXELS (a warning) and past twice it (an error)
def test_a_decompression_bomb_is_one_clear_error(tmp_path, monkeypatch, pixels):
    """Pillow's DecompressionBombError is not an OSError: a 27 KB PNG of 15,000 x 15,000 px gave a traceback in
    generate.py and a 500 in the server; between the limit and twice it Pillow only warned and decoded it all."""
    from core.video_probe import video_fps

    side = int(pixels**0.5)
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")
    frames = [Image.new("RGB", (side, side), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "bomb.gif", save_all=True, append_images=frames[1:], duration=125)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for name in ("bomb.png", "bomb.gif"):
        with pytest.raises(ValueError, match="decompression bomb"):
            read_video(tmp_path / name)
    with pytest.raises(ValueError, match="decompression bomb"):
        video_fps(tmp_path / "bomb.gif")


def test_an_animated_gif_is_resized_frame_by_frame_to_what_a_full_size_read_gives(tmp_path):
    """Frames are now resized as Pillow decodes them (a GIF held every frame at full size first): same values."""
    from core.frames import resize_center_crop

    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)) for _ in range(4)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=125)
    full = read_video(tmp_path / "a.gif")
    assert full.shape == (4, 90, 120, 3)
    np.testing.assert_array_equal(read_video(tmp_path / "a.gif", size=(32, 48)), resize_center_crop(full, (32, 48)))

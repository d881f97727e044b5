import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fmnist.data.images import MAX_PIXELS, load_image
from fmnist.errors import FmnistError


def save(tmp_path, array, name="x.png", mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode).save(path)
    return path


def test_dark_object_on_light_background_is_inverted_and_fitted(tmp_path):
    img = np.full((100, 50), 255, np.uint8)  # white background, tall black object
    img[10:90, 15:35] = 0
    x = load_image(save(tmp_path, img))
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    cols = (x[0] > 0.5).any(0).nonzero().flatten()
    rows = (x[0] > 0.5).any(1).nonzero().flatten()
    assert rows.min() <= 1 and rows.max() >= 26  # the long side fills the frame
    assert 6 <= len(cols) <= 8  # aspect ratio 20:80 kept: 7 columns of 28
    assert x[0, 0, 0] == 0 and x[0, 14, 14] > 0.9  # dark background, light object


def test_colour_jpeg_and_transparent_png(tmp_path):
    rgb = np.zeros((60, 60, 3), np.uint8)
    rgb[20:40, 20:40] = (200, 50, 50)
    x = load_image(save(tmp_path, rgb, "c.jpg"))
    assert x.shape == (1, 28, 28) and x.max() > 0.5
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[5:35, 15:25] = (0, 0, 0, 255)  # black bar on a transparent (white) background
    y = load_image(save(tmp_path, rgba, "t.png"))
    assert y[0, 14, 14] > 0.9 and y[0, 0, 0] == 0


@pytest.mark.parametrize(
    "content, message", [(b"", "empty"), (b"not an image at all", "not an image"), (None, "no such file")]
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "f.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FmnistError, match=message):
        load_image(path)


def test_truncated_png(tmp_path):
    path = save(tmp_path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FmnistError, match="corrupt or truncated"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100  # a 1-bit PNG: small on disk, huge once decoded
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(FmnistError, match="too large"):
        load_image(path)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_mutated_png_gives_an_image_or_our_error(tmp_path_factory, noise):
    base = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path_factory.mktemp("m") / "m.png"
    Image.fromarray(base).save(path)
    blob = bytearray(path.read_bytes())
    for i, b in enumerate(noise[:8]):
        blob[(b * 7 + i * 31) % len(blob)] = noise[-1 - i]
    path.write_bytes(bytes(blob))
    try:
        x = load_image(path)
    except FmnistError:
        return
    assert x.shape == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1

"""Batch augmentations: shapes, value ranges, determinism, and exact crop/flip/erase results."""

import pytest
import torch

from fmnist.training.augment import augment, parse_augment, random_crop, random_erase, random_flip


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images():
    return torch.rand(64, 1, 28, 28, generator=gen(1))


def shifted(image, dy, dx):
    """`image` moved down by dy and right by dx pixels, zeros coming in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = image[
        ..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)
    ]
    return out


@pytest.mark.parametrize("names", [["crop"], ["flip"], ["erase"], ["crop", "flip", "erase"]])
def test_shape_dtype_range_and_determinism(images, names):
    a = augment(images, names, gen(5))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment(images, names, gen(5)))  # same seed, same result
    assert not torch.equal(a, augment(images, names, gen(6)))


def test_crop_is_a_shift_with_zero_fill(images):
    out = random_crop(images, 2, gen())
    shifts = set()
    for x, y in zip(images, out):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(shifted(x, dy, dx), y)]
        assert match, "each crop must equal the image shifted by at most 2 pixels"
        shifts.add(match[0])
    assert len(shifts) > 10  # the offsets vary between images


def test_crop_on_a_hand_made_image():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0  # one bright pixel in the corner
    outs = {tuple(random_crop(x, 1, gen(s))[0, 0].nonzero().flatten().tolist()) for s in range(60)}
    # shifted by -1, 0 or +1 each way: the pixel lands at row/col 0 or 1, or falls off the edge
    assert outs <= {(0, 0), (0, 1), (1, 0), (1, 1), ()} and len(outs) == 5
    assert torch.equal(random_crop(x, 0, gen()), x)


def test_flip_mirrors_or_keeps_each_image():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = random_flip(x, gen())
    mirrored = torch.tensor([torch.equal(o, x[0].flip(-1)) for o in out])
    kept = torch.tensor([torch.equal(o, x[0]) for o in out])
    assert bool((mirrored ^ kept).all())
    assert 60 < int(mirrored.sum()) < 140
    assert torch.equal(out[mirrored][0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))


def test_erase_zeroes_one_rectangle(images):
    out = random_erase(images + 0.5, gen(), p=1.0)  # no zeros before erasing
    for y in out:
        rows, cols = (y[0] == 0).nonzero(as_tuple=True)
        assert len(rows) > 0
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        assert len(rows) == (r1 - r0 + 1) * (c1 - c0 + 1)  # a full rectangle, nothing else
        assert len(rows) <= 0.25 * 28 * 28 * 1.3  # within the area range, up to rounding
    assert torch.equal(random_erase(images, gen(), p=0.0), images)


def test_parse_augment():
    assert parse_augment("") == [] and parse_augment(" crop , flip") == ["crop", "flip"]
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        parse_augment("crop,rotate")

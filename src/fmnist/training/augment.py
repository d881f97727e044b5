"""Data augmentation on whole batches of images (N, 1, H, W) as tensor operations.

Random numbers come from an explicit CPU generator (saved in checkpoints, so a resumed run draws
the same ones) and are moved to the images' device once per call, not per image.
"""

from __future__ import annotations

import torch

AUGMENTATIONS = ("crop", "flip", "erase")


def parse_augment(spec: str) -> list[str]:
    """'crop,flip' → ['crop', 'flip']; an empty string means none."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
    return names


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `pad` pixels in each direction, filling with zeros (the background):
    the same as zero-padding by `pad` and cropping back to the original size at a random offset."""
    if pad == 0:
        return images
    n, _, h, w = images.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(images.device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_erase(
    images: torch.Tensor,
    generator: torch.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """With probability `p` per image, set one random rectangle (a fraction `area` of the image,
    aspect ratio in `ratio`) to zero, as in Zhong et al.'s random erasing."""
    n, _, h, w = images.shape
    u = torch.rand(5, n, generator=generator)
    frac = area[0] + (area[1] - area[0]) * u[0]
    log_r = torch.log(torch.tensor(ratio[0])) + torch.log(torch.tensor(ratio[1] / ratio[0])) * u[1]
    eh = (frac * h * w * log_r.exp()).sqrt().round().clamp(1, h).long()
    ew = (frac * h * w / log_r.exp()).sqrt().round().clamp(1, w).long()
    y0 = (u[2] * (h - eh + 1)).long()
    x0 = (u[3] * (w - ew + 1)).long()
    on = u[4] < p
    y = torch.arange(h)[None, :]
    x = torch.arange(w)[None, :]
    in_rows = (y >= y0[:, None]) & (y < (y0 + eh)[:, None])  # (N, H)
    in_cols = (x >= x0[:, None]) & (x < (x0 + ew)[:, None])  # (N, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None])[:, None].to(images.device)
    return images.masked_fill(mask, 0.0)


def augment(
    images: torch.Tensor, names: list[str], generator: torch.Generator, crop_pad: int = 2, erase_p: float = 0.5
) -> torch.Tensor:
    """Apply the named augmentations in a fixed order (crop, flip, erase) to a batch of images."""
    if "crop" in names:
        images = random_crop(images, crop_pad, generator)
    if "flip" in names:
        images = random_flip(images, generator)
    if "erase" in names:
        images = random_erase(images, generator, erase_p)
    return images

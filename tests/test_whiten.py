"""The whitened first layer: its filters decorrelate patches, come in ± pairs, stay fixed in
training, and refuse a layer they cannot fill."""

import pytest
import torch
from torch import nn

from fmnist.errors import UsageError
from fmnist.models import create_model
from fmnist.models.whiten import check_whitenable, first_conv, freeze_first_conv, whiten_first_conv, whitening_filters
from fmnist.training import loop as train
from fmnist.training import setup as trainer
from fmnist.training.config import TrainConfig


def correlated_images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 14, 14, generator=g)
    smooth = nn.functional.interpolate(base, size=28, mode="bilinear")  # neighbours correlate
    return smooth + 0.05 * torch.rand(n, 1, 28, 28, generator=g)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(1, 18, 3, padding=1, bias=False),  # all 9 directions of a 3×3 patch, ± each
        nn.Conv2d(1, 8, 2, stride=2, bias=False),  # resnet_quick's and resnet_sprint's stem: all 4 of a 2×2 patch
    ],
    ids=["3x3", "2x2-stride-2"],
)
def test_filters_whiten_the_patches_and_come_in_pairs(conv):
    images = correlated_images()
    w = whitening_filters(images, conv, eps=0.0)
    k = conv.out_channels // 2
    size = conv.kernel_size[0]
    assert w.shape == conv.weight.shape
    assert torch.allclose(w[k:], -w[:k])
    # The patches the convolution reads: all of them for stride 1, every other one for stride 2.
    patches = nn.functional.unfold(images, size, padding=conv.padding, stride=conv.stride)
    patches = patches.transpose(1, 2).reshape(-1, k).double()
    patches -= patches.mean(0)
    out = patches @ w[:k].reshape(k, k).double().T
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(k, dtype=torch.float64), atol=1e-3)


def test_too_many_channels_for_the_patch_is_refused():
    with pytest.raises(ValueError, match="at most 18"):
        check_whitenable(nn.Sequential(nn.Conv2d(1, 32, 3, padding=1)))
    with pytest.raises(ValueError, match="no convolution"):
        first_conv(create_model("shallow"))


@pytest.mark.parametrize("name", ["resnet_fast", "resnet_quick", "resnet_sprint", "resnet_large"])
def test_whitened_stem_stays_fixed_while_the_rest_trains(name):
    images = correlated_images(256)
    labels = torch.arange(256) % 10
    model = create_model(name)
    cfg = TrainConfig(
        model=name,
        epochs=1,
        batch_size=64,
        whiten=True,
        ema=0.9,
        quiet=True,
        optimizer="adamw",
        weight_decay=0.1,
        lr=0.01,
    )
    others = [p.detach().clone() for p in model.parameters()][1:]
    train.fit(model, (images[:192], labels[:192]), (images[192:], labels[192:]), cfg)
    stem = first_conv(model)
    expected = whitening_filters(images[:192], stem)
    assert torch.equal(stem.weight.detach().contiguous(), expected) and not stem.weight.requires_grad
    assert all(not torch.equal(a, b) for a, b in zip(others, list(model.parameters())[1:]))


def test_whiten_on_a_model_without_a_fitting_stem_is_a_usage_error():
    images, labels = correlated_images(64), torch.arange(64) % 10
    cfg = TrainConfig(model="resnet_wide", epochs=1, batch_size=32, whiten=True, quiet=True)
    with pytest.raises(UsageError, match="--whiten: resnet_wide: cannot whiten a 3×3 convolution to 32 channels"):
        train.fit(create_model("resnet_wide"), (images[:48], labels[:48]), (images[48:], labels[48:]), cfg)


def test_freeze_leaves_the_stem_out_of_the_optimizer():
    model = create_model("resnet_fast")
    freeze_first_conv(model)
    whiten_first_conv(model, correlated_images(50))
    opt = trainer.make_trainer(model, TrainConfig(model="resnet_fast", optimizer="sgd"), 10).optimizer
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(first_conv(model).weight) not in held and len(held) == len(list(model.parameters())) - 1

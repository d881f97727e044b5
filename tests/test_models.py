import pytest
import torch
from torch import nn

from fmnist.errors import UsageError
from fmnist.models import count_params, create_model, list_models, register_model

STUDY_PARAMS = {"shallow": 101_770, "simple_cnn": 693_962, "deep_cnn": 241_546, "deeper_cnn": 1_779_370}


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_logits_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("name, params", STUDY_PARAMS.items())
def test_study_models_have_the_specified_sizes(name, params):
    assert count_params(create_model(name)) == params


def test_registry_rejects_duplicates_and_unknown_names(monkeypatch):
    from fmnist.models import registry

    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))  # undone after the test

    def probe_model():
        return torch.nn.Linear(1, 1)

    register_model(probe_model)
    assert "probe_model" in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model(probe_model)
    with pytest.raises(UsageError, match="unknown model 'resnet1000'.*shallow"):
        create_model("resnet1000")


def test_resnet_quick_reads_each_2x2_patch_once():
    model = create_model("resnet_quick")
    stem = model[0]
    assert stem.kernel_size == stem.stride == (2, 2) and stem.out_channels == 8
    assert model[:3](torch.rand(2, 1, 28, 28)).shape == (2, 8, 14, 14)
    assert count_params(model) < count_params(create_model("resnet_fast"))


def test_resnet_sprint_has_no_wide_14x14_maps():
    model = create_model("resnet_sprint")
    assert model[:3](torch.rand(2, 1, 28, 28)).shape == (2, 8, 14, 14)  # the stem of resnet_quick
    assert model[:6](torch.rand(2, 1, 28, 28)).shape == (2, 32, 7, 7)  # then straight to 7×7
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert count_params(model) < count_params(create_model("resnet_quick"))


def test_resnet_large_has_a_third_stage_at_3x3():
    model = create_model("resnet_large")
    x = torch.rand(2, 1, 28, 28)
    assert model[:3](x).shape == (2, 8, 14, 14)  # resnet_quick's patch stem
    assert model[:-3](x).shape == (2, 256, 3, 3)
    assert count_params(model) > count_params(create_model("resnet_wide"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_global_max_pool_is_the_adaptive_pool_in_value_and_gradient_ties_included(dtype):
    # Ties (whole-number values here; common in bfloat16) are where `amax` would differ: it splits
    # the gradient among them, the pool gives it all to the first.
    from fmnist.models.resnet import GlobalMaxPool

    x = torch.relu(torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))).round().to(dtype)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = GlobalMaxPool()(ours), nn.AdaptiveMaxPool2d(1)(theirs)
    assert out.shape == expected.shape == (16, 8, 1, 1) and torch.equal(out, expected)
    grad = torch.randn(expected.shape).to(dtype)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(ours.grad, theirs.grad)

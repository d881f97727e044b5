"""Learning-rate schedules, optimizers, the weight average (EMA) and test-time augmentation."""

import math

import pytest
import torch
from torch import nn

from fmnist.models.forward import predict_logits, shift
from fmnist.training.config import TrainConfig
from fmnist.training.schedule import lr_factor, make_optimizer, make_scheduler
from fmnist.training.setup import make_trainer


def test_warmup_is_linear_then_constant():
    f = lr_factor("constant", 100, 0.1)
    assert [f(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == f(99) == 1.0


def test_linear_decays_to_zero():
    f = lr_factor("linear", 110, 10 / 110)
    assert f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0


def test_cosine_is_half_way_at_the_middle():
    f = lr_factor("cosine", 100, 0.0)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert f(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_sets_the_rate_each_step_and_round_trips():
    model = nn.Linear(3, 2)
    opt = make_optimizer(model, "sgd", 0.1)
    sched = make_scheduler(opt, "linear", 10, 0.2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # warm-up step 1 of 2
    for _ in range(6):
        opt.step()
        sched.step()
    opt2 = make_optimizer(model, "sgd", 0.1)
    again = make_scheduler(opt2, "linear", 10, 0.2)
    again.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    rates = []
    for s, o in ((sched, opt), (again, opt2)):  # the restored one goes on exactly as the original
        seq = []
        for _ in range(5):
            o.step()
            s.step()
            seq.append(o.param_groups[0]["lr"])
        rates.append(seq)
    assert rates[0] == rates[1] and rates[0] == pytest.approx([0.0375, 0.025, 0.0125, 0.0, 0.0])


def test_cycles_run_the_schedule_anew():
    f = lr_factor("cosine", [100, 40], 0.1)
    g = lr_factor("cosine", 40, 0.1)
    assert [f(t) for t in range(100)] == [lr_factor("cosine", 100, 0.1)(t) for t in range(100)]
    assert [f(100 + t) for t in range(41)] == [g(t) for t in range(41)]
    assert f(100) == pytest.approx(0.25)  # warm-up again: step 1 of 4


@pytest.mark.parametrize(
    "name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizers_decay_weights_not_biases_or_norms(name, kind):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    opt = make_optimizer(model, name, 0.01, weight_decay=0.1)
    assert isinstance(opt, kind)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert [p.ndim for p in decayed["params"]] == [4] and all(p.ndim == 1 for p in plain["params"])
    if name == "sgd":
        assert decayed["nesterov"] and decayed["momentum"] == 0.9


def test_ema_follows_its_formula():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    trainer = make_trainer(model, TrainConfig(ema=0.9, optimizer="sgd", lr=0.1), steps_per_epoch=5)
    expected = [p.detach().clone() for p in model.parameters()]  # the first update copies
    trainer.ema.update_parameters(model)
    for _ in range(30):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        n = trainer.ema.n_averaged.item()
        trainer.ema.update_parameters(model)
        d = min(0.9, (1 + n) / (10 + n))  # the decay warms up from 0.1
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, a in zip(expected, trainer.eval_module.parameters()):
        assert torch.allclose(e, a, atol=1e-6)
    assert not torch.allclose(expected[0], model.weight)  # the average lags the raw weights


class LeftHalf(nn.Module):
    """Logits that depend on the left half of the image only, so mirroring changes them."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.arange(10.0))

    def forward(self, x):
        return x[..., :14].sum((1, 2, 3))[:, None] * self.scale


def test_flip_tta_averages_the_image_and_its_mirror():
    x = torch.rand(5, 1, 28, 28)
    model = LeftHalf()
    tta = predict_logits(model, x, tta=True)
    with torch.no_grad():
        assert torch.allclose(tta, model(x) / 2 + model(x.flip(3)) / 2) and not torch.allclose(tta, model(x))


def test_shift_moves_the_pixels_and_fills_the_edge_with_zeros():
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    assert shift(x, 1, 0).tolist() == [[[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]]  # right
    assert shift(x, 0, -1).tolist() == [[[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]]  # up
    assert shift(x, 0, 0).equal(x) and shift(x, 2, 2).tolist() == [[[[0, 0, 0], [0, 0, 0], [0, 0, 1]]]]


def test_shift_tta_averages_the_moved_images_and_their_mirrors():
    x = torch.rand(5, 1, 28, 28)
    model = LeftHalf()
    views = [x, shift(x, 2, 0), shift(x, -2, 0), shift(x, 0, 2), shift(x, 0, -2)]
    with torch.no_grad():
        moved = sum(model(v) for v in views) / 5
        both = sum(model(v) + model(v.flip(3)) for v in views) / 10
    assert torch.allclose(predict_logits(model, x, tta_shift=2), moved)
    assert torch.allclose(predict_logits(model, x, tta=True, tta_shift=2), both)
    assert not torch.allclose(moved, model(x).detach())

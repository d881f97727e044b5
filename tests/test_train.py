import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import untimed

from fmnist.models import create_model
from fmnist.models.forward import layout, predict_logits, prepare
from fmnist.stops import Diverged
from fmnist.training.config import TrainConfig
from fmnist.training.loop import fit
from fmnist.training.schedule import make_optimizer

CFG = TrainConfig(epochs=2, batch_size=16, quiet=True)


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ["simple_cnn", "deep_cnn", "deeper_cnn"])
def test_channels_last_gives_the_plain_results(name):
    torch.manual_seed(0)
    plain = create_model(name).eval()
    fast = prepare(create_model(name), torch.device("cpu")).eval()
    fast.load_state_dict(plain.state_dict())
    x, _ = data(8)
    assert torch.allclose(plain(x), fast(layout(fast, x)), atol=1e-5)


@pytest.mark.parametrize("name, reference", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_fused_optimizer_matches_the_reference_loop(name, reference):
    torch.manual_seed(0)
    a, b = create_model("deep_cnn"), create_model("deep_cnn")
    b.load_state_dict(a.state_dict())
    opt_a = reference(a.parameters(), 1e-3, foreach=False, fused=False, weight_decay=0.0)
    opt_b = make_optimizer(b, name, 1e-3)  # fmnist's own, fused on the CPU
    assert opt_b.defaults["fused"]
    x, y = data(32)
    for model, opt in ((a, opt_a), (b, opt_b)):
        torch.manual_seed(1)  # same dropout masks
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_batched_inference_matches_one_batch():
    torch.manual_seed(0)
    model = create_model("deep_cnn").eval()
    x, _ = data(50)
    with torch.no_grad():
        whole = model(x)
    assert torch.allclose(predict_logits(model, x, batch_size=7), whole, atol=1e-5)


def run(cfg, seed_data=0):
    torch.manual_seed(cfg.seed)
    model = prepare(create_model(cfg.model), torch.device("cpu"))
    train, val = data(96, seed_data), data(32, seed_data + 1)
    return fit(model, train, val, cfg), model


def test_same_seed_same_history_and_weights():
    cfg = dataclasses.replace(CFG, model="deep_cnn")
    (h1, m1), (h2, m2) = run(cfg), run(cfg)
    assert untimed(h1) == untimed(h2)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_training_learns_a_learnable_task():
    torch.manual_seed(0)
    x = torch.zeros(200, 1, 28, 28)
    y = torch.arange(10).repeat(20)
    for i, c in enumerate(y):
        x[i, 0, 2 + 2 * c] = 1.0
    model = create_model("shallow")
    cfg = dataclasses.replace(CFG, epochs=5)
    history = fit(model, (x, y), (x[:50], y[:50]), cfg)
    assert history[-1]["val_accuracy"] == 1.0 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_nan_loss_stops_with_epoch_and_step():
    x, y = data(64)
    x[40] = float("nan")  # poisons whichever step draws image 40
    with pytest.raises(Diverged, match=r"epoch 1, step \d+"):
        fit(create_model("shallow"), (x, y), data(16), CFG)


def test_batch_larger_than_data_is_refused():
    with pytest.raises(Exception, match="larger than"):
        fit(create_model("shallow"), data(10), data(10), dataclasses.replace(CFG, batch_size=32))


def test_mixed_precision_runs_the_steps_in_bfloat16():
    seen = []
    model = create_model("simple_cnn")
    model[0].register_forward_hook(lambda m, args, out: seen.append((m.training, out.dtype)))
    for mixed in (True, False):
        seen.clear()
        cfg = dataclasses.replace(CFG, model="simple_cnn", epochs=1, mixed_precision=mixed)
        history = fit(model, data(32), data(16, 1), cfg)
        steps = {dtype for training, dtype in seen if training}
        assert steps == ({torch.bfloat16} if mixed else {torch.float32}) and math.isfinite(history[0]["train_loss"])
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation in fp32

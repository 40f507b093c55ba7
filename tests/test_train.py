"""The training loop: bit-identical resume, NaN guard, damaged checkpoints, data forms, plots."""

import os

import matplotlib
import pytest
import torch

from diffnotes.data import digits
from diffnotes.losses import eps_loss
from diffnotes.models.unet import UNet, UNetConfig
from diffnotes.schedules import linear_schedule
from diffnotes.train import CHECKPOINT_NAME, TrainResult, load_checkpoint, loss_curve, train

matplotlib.use("Agg")
SCHED = linear_schedule(1000)
X0 = digits(8, "train")[0]
# dropout > 0 on purpose: the global RNG must be restored on resume too
CFG = UNetConfig(
    image_size=8, base_channels=8, num_res_blocks=1, attention_resolutions=(), dropout=0.1
)
KW = dict(steps=10, batch_size=8, lr=1e-3, progress=False)


def unet():
    torch.manual_seed(0)
    return UNet(CFG)


def interrupt_at(call, loss_fn):
    calls = [0]

    def wrapped(model, batch, g):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return loss_fn(model, batch, g)

    return wrapped


def test_resume_is_bit_identical(tmp_path):
    loss = eps_loss(SCHED)
    full = train(unet(), loss, X0, **KW)
    with pytest.raises(KeyboardInterrupt):
        train(unet(), interrupt_at(8, loss), X0, checkpoint_dir=tmp_path, checkpoint_every=3, **KW)
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert meta["step"] == "6"
    resumed = train(unet(), loss, X0, checkpoint_dir=tmp_path, checkpoint_every=3, **KW)
    for a, b in [(full.model, resumed.model), (full.ema, resumed.ema)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert resumed.losses == full.losses and len(full.losses) == 10
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp files left


def test_same_seed_same_run_and_callers_rng_untouched():
    model = unet()  # builds from the global RNG: the state train must leave alone is the one after
    state = torch.get_rng_state()
    a = train(model, eps_loss(SCHED), X0, **{**KW, "steps": 3})
    assert torch.equal(torch.get_rng_state(), state)
    b = train(unet(), eps_loss(SCHED), X0, **{**KW, "steps": 3})
    assert a.losses == b.losses
    c = train(unet(), eps_loss(SCHED), X0, seed=1, **{**KW, "steps": 3})
    assert a.losses != c.losses


def test_nan_loss_raises_with_the_step():
    calls = [0]

    def loss_fn(model, batch, g):
        calls[0] += 1
        return model(batch).mean() * (float("nan") if calls[0] == 5 else 1.0)

    with pytest.raises(FloatingPointError, match="step 4"):
        train(
            torch.nn.Linear(3, 1),
            loss_fn,
            torch.randn(20, 3),
            steps=10,
            batch_size=4,
            progress=False,
        )


def _checkpoint(tmp_path):
    train(unet(), eps_loss(SCHED), X0, checkpoint_dir=tmp_path, **{**KW, "steps": 2})
    return tmp_path / CHECKPOINT_NAME


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = _checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF  # inside the tensor bytes: safetensors itself cannot notice
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"\x00" * 64)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        train(unet(), eps_loss(SCHED), X0, checkpoint_dir=tmp_path, **KW)


def test_resume_with_other_settings_is_refused(tmp_path):
    _checkpoint(tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        train(unet(), eps_loss(SCHED), X0, checkpoint_dir=tmp_path, **{**KW, "batch_size": 4})


def test_data_forms_and_progress(capsys):
    model = torch.nn.Linear(2, 1)
    x, y = torch.randn(50, 2), torch.randn(50, 1)
    mse = lambda m, b, g: ((m(b[0]) - b[1]) ** 2).mean()  # noqa: E731
    res = train(model, mse, (x, y), steps=200, batch_size=16, lr=1e-2, progress=True, log_every=50)
    assert isinstance(res, TrainResult) and len(res.losses) == 200
    assert sum(res.losses[-20:]) < sum(res.losses[:20])
    assert "train" in capsys.readouterr().err  # a text bar on stderr
    stream = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731
    res = train(
        model, lambda m, b, g: m(b).pow(2).mean(), stream, steps=5, batch_size=4, progress=False
    )
    assert len(res.losses) == 5 and not res.model.training


def test_loss_curve_is_a_static_figure():
    res = TrainResult(model=None, ema=None, losses=[1.0 / (i + 1) for i in range(300)])
    fig = loss_curve(res, title="demo")
    assert isinstance(fig, matplotlib.figure.Figure)
    with pytest.raises(ValueError, match="losses"):
        loss_curve([])


def test_bad_input(tmp_path):
    m, f = torch.nn.Linear(2, 1), lambda m, b, g: m(b).mean()
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="steps"):
        train(m, f, x, steps=-1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        train(m, f, x, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="data"):
        train(m, f, (x, torch.randn(9)), steps=1, batch_size=2)
    with pytest.raises(ValueError, match="data"):
        train(m, f, [1, 2, 3], steps=1, batch_size=2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(m, f, x, steps=1, batch_size=2, checkpoint_every=5)
    with pytest.raises(ValueError, match="ema_decay"):
        train(m, f, x, steps=1, batch_size=2, ema_decay=1.0)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(os.path.join(tmp_path, "missing.safetensors"))

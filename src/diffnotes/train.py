"""One training loop for every chapter: AdamW, EMA, gradient clipping, atomic resumable checkpoints.

A loss is a small function ``loss_fn(model, batch, generator) -> scalar`` (see `diffnotes.losses`);
the loop owns everything else. Runs are deterministic on CPU from ``seed``: minibatch indices come
from a CPU generator, the loss's noise from a generator on the model's device, and dropout from the
global RNG, which is seeded inside `torch.random.fork_rng` so the caller's RNG is left untouched.

A checkpoint is one safetensors file holding the model, the EMA, the flattened optimizer state, all
three RNG states, the step and the losses so far, plus a SHA-256 of every tensor in its metadata:
resuming reproduces an uninterrupted run bit for bit on CPU, and a damaged file is refused.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffnotes.io import flatten_optimizer, read_safetensors, unflatten_optimizer, write_safetensors
from diffnotes.util import check_callable, check_in, check_instance, check_int, check_number

FORMAT = "diffnotes-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.safetensors"

Batch = Tensor | tuple[Tensor, ...]
Data = Tensor | Sequence[Tensor] | Callable[[int, torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch, torch.Generator], Tensor]


@dataclass
class TrainResult:
    """The trained model, its EMA copy (the one to sample from) and the loss of every step."""

    model: nn.Module
    ema: nn.Module
    losses: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _state_tensors(prefix: str, module: nn.Module) -> dict[str, Tensor]:
    # clone so tied weights become separate entries (safetensors refuses shared storage)
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def _sub(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read and verify a training checkpoint; ValueError if corrupt or not a diffnotes one."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"path={str(path)!r} is not a {FORMAT} file")
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# the loop


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _to(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, Tensor):
        return batch.to(device)
    return tuple(b.to(device) if isinstance(b, Tensor) else b for b in batch)


def _make_sampler(data: Data, batch_size: int) -> Callable[[torch.Generator], Batch]:
    """Random minibatches (with replacement: stateless, so a resume needs only the RNG state)."""
    if callable(data) and not isinstance(data, Tensor):
        return lambda g: data(batch_size, g)
    tensors = (data,) if isinstance(data, Tensor) else tuple(data)
    if not tensors or not all(isinstance(t, Tensor) and t.ndim >= 1 for t in tensors):
        raise ValueError("data must be a Tensor, a tuple of Tensors or a callable(batch_size, g)")
    n = len(tensors[0])
    if n == 0 or any(len(t) != n for t in tensors):
        raise ValueError(f"data: tensors must be non-empty with equal lengths, got {n} and others")

    def sample(g: torch.Generator) -> Batch:
        idx = torch.randint(n, (batch_size,), generator=g)
        out = tuple(t[idx.to(t.device)] for t in tensors)
        return out[0] if isinstance(data, Tensor) else out

    return sample


@torch.no_grad()
def _ema_update(ema: list[Tensor], live: list[Tensor], n_params: int, decay: float) -> None:
    """ema <- decay ema + (1 - decay) live for parameters; buffers are copied."""
    if n_params:  # one fused op over all tensors: the loop's per-step cost on small models
        torch._foreach_lerp_(ema[:n_params], live[:n_params], 1.0 - decay)
    for e, b in zip(ema[n_params:], live[n_params:]):
        e.copy_(b)


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    steps: int,
    batch_size: int,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    grad_clip: float | None = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: bool = False,
    log_every: int = 50,
) -> TrainResult:
    """Train ``model`` for ``steps`` AdamW steps on minibatches of ``data``; Ho et al. 2020 setup.

    Defaults follow DDPM (lr 2e-4, grad clip 1, EMA 0.9999 there; 0.999 here for short runs). The
    EMA decay is warmed up as min(ema_decay, (1 + step) / (10 + step)) so short runs are not
    dominated by the initial weights. With ``checkpoint_dir`` the run resumes from the checkpoint
    found there and writes one every ``checkpoint_every`` steps and at the end.
    """
    check_instance(model, "model", nn.Module, "an nn.Module")
    check_callable(loss_fn, "loss_fn", "(model, batch, generator)")
    check_int(steps, "steps", 0)
    check_int(batch_size, "batch_size", 1)
    check_number(lr, "lr", positive=True)  # lr = 0 would train nothing, silently
    check_in(ema_decay, "ema_decay", 0, 1, "[)")
    if grad_clip is not None:  # 0 zeroes every gradient; a negative one flips their sign
        check_number(grad_clip, "grad_clip", positive=True)
    check_number(weight_decay, "weight_decay", minimum=0.0)
    check_int(seed, "seed", 0)
    if checkpoint_every is not None:
        check_int(checkpoint_every, "checkpoint_every", 1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every must be >= 1 and needs checkpoint_dir")
    if checkpoint_dir is not None and Path(checkpoint_dir).exists():
        if not Path(checkpoint_dir).is_dir():
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is a file, not a folder")
    check_int(log_every, "log_every", 1)
    sample_batch = _make_sampler(data, batch_size)
    device = _device_of(model)
    settings = dict(
        batch_size=batch_size, lr=lr, ema_decay=ema_decay, grad_clip=grad_clip, seed=seed
    )
    settings["weight_decay"] = weight_decay

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # dropout etc. draw from the global RNG
        data_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
        losses: list[float] = []
        step = 0

        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        if ckpt is not None and ckpt.exists():
            tensors, meta = load_checkpoint(ckpt)  # raises on a damaged file: never loads it
            saved = json.loads(meta["settings"])
            for key, value in settings.items():
                if saved.get(key) != value:
                    raise ValueError(
                        f"{key}={value!r} differs from the checkpoint's {saved.get(key)!r} "
                        f"in {str(ckpt)!r}; use another checkpoint_dir or the same settings"
                    )
            model.load_state_dict(_sub(tensors, "model"))
            ema.load_state_dict(_sub(tensors, "ema"))
            opt.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
            data_gen.set_state(tensors["rng.data"])
            noise_gen.set_state(tensors["rng.noise"])
            torch.set_rng_state(tensors["rng.torch"])
            if device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], device)
            losses = tensors["losses"].tolist()
            step = int(meta["step"])

        def save() -> None:
            opt_tensors, opt_json = flatten_optimizer(opt)
            tensors = {
                **_state_tensors("model", model),
                **_state_tensors("ema", ema),
                **opt_tensors,
                "rng.data": data_gen.get_state(),
                "rng.noise": noise_gen.get_state(),
                "rng.torch": torch.get_rng_state(),
                "losses": torch.tensor(losses, dtype=torch.float64),
            }
            if device.type == "cuda":
                tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
            meta = {"format": FORMAT, "step": str(step), "optimizer": opt_json}
            meta["settings"] = json.dumps(settings)
            write_safetensors(ckpt, tensors, meta)

        bar = None
        if progress and step < steps:
            from tqdm import tqdm  # the text bar: widget bars render blank in the static book

            bar = tqdm(total=steps, initial=step, desc="train", ascii=True, mininterval=1.0)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        n_params = len(list(model.parameters()))
        ema_tensors = [*ema.parameters(), *ema.buffers()]
        live_tensors = [*model.parameters(), *model.buffers()]
        try:
            while step < steps:
                batch = _to(sample_batch(data_gen), device)
                loss = loss_fn(model, batch, noise_gen)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss is {value} at step {step} (of {steps})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
                opt.step()
                decay = min(ema_decay, (1 + step) / (10 + step))
                _ema_update(ema_tensors, live_tensors, n_params, decay)
                losses.append(value)
                step += 1
                if bar is not None:
                    bar.update(1)
                    if step % log_every == 0 or step == steps:
                        recent = losses[-log_every:]
                        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
                if ckpt is not None and checkpoint_every and step % checkpoint_every == 0:
                    save()
            if ckpt is not None and (not checkpoint_every or step % checkpoint_every != 0):
                save()
        finally:
            if bar is not None:
                bar.close()
    model.eval()
    return TrainResult(model=model, ema=ema, losses=losses)


def loss_curve(
    losses: Sequence[float] | TrainResult,
    *,
    smooth: int = 50,
    ax: Any = None,
    title: str | None = None,
    log: bool = True,
) -> Any:
    """A static matplotlib figure of the per-step loss and its moving average over ``smooth``."""
    import matplotlib.pyplot as plt

    if isinstance(losses, TrainResult):
        losses = losses.losses
    try:
        values = torch.as_tensor(list(losses), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"losses must be a sequence of numbers, got {losses!r:.40}") from None
    if values.ndim != 1 or values.numel() == 0 or not values.isfinite().all():
        bad = int((~values.isfinite()).sum())
        raise ValueError(f"losses must be a non-empty sequence of finite numbers, got {bad} not")
    check_int(smooth, "smooth", 1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3))
    else:
        fig = ax.figure
    steps = torch.arange(1, len(values) + 1)
    ax.plot(steps, values, color="0.75", lw=0.8, label="loss")
    k = min(smooth, len(values))
    avg = values.cumsum(0)
    avg = torch.cat([avg[:k] / torch.arange(1, k + 1), (avg[k:] - avg[:-k]) / k])
    ax.plot(steps, avg, color="C0", lw=1.5, label=f"mean of last {k}")
    if log and bool((values > 0).all()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig

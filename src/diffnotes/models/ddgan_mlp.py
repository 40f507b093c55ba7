"""DDGAN's generator and discriminator as lean MLPs for 2-D points (Xiao et al. 2022, Sec. 3.3),
optionally as an ensemble of independent members trained side by side.

- G(x_t, z, t) -> x0: the noisy point and the latent z concatenated, the step t as a learned
  embedding added to the first hidden layer (T is a handful of steps, so a table of T rows is as
  expressive as the official code's sinusoidal embedding and its MLP).
- D(x_{t-1}, x_t, t) -> logits (B,): the pair concatenated, the same embedding of t.
- eps(x_t, t): the same MLP as an eps-model, for the Gaussian baseline on the same T steps.

An ensemble of E members (`stack`) holds E sets of weights as (E, in, out) tensors; a batch of
E * n rows is read member-major (rows e * n .. e * n + n - 1 go through member e only), so the
members never mix and a loss averaged over all rows trains each on its own rows. On a CPU, where
a 2-D MLP's step is mostly fixed overhead, E seeds cost little more than one.

Own code: the `models.gan` parts serve both GAN chapters and images; these drop the time MLP (a
third of the discriminator's cost, which R1 differentiates twice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnotes.models.blocks import check_input, make_config
from diffnotes.util import check_int

__all__ = [
    "DDGANMLPConfig",
    "StepMLP",
    "DDGANMLPGenerator",
    "DDGANMLPDiscriminator",
    "DDGANMLPEps",
    "stack",
    "member",
]


@dataclass
class DDGANMLPConfig:
    dim: int = 2  # data dimension D
    z_dim: int = 8  # latent noise z ~ N(0, I) of the generator
    hidden: int = 128  # width
    depth: int = 3  # hidden layers after the first
    T: int = 4  # denoising steps: the rows of the step embedding
    members: int = 1  # independent networks in one ensemble (see `stack`)

    def __post_init__(self) -> None:
        check_int(self.depth, "depth", 0)
        check_int(self.T, "T", 1)
        check_int(self.members, "members", 1)


class StepMLP(nn.Module):
    """E MLPs (E * n, in) -> (E * n, out), LeakyReLU(0.2), a learned embedding of the step t
    added to the first hidden layer; nn.Linear's and nn.Embedding's initialisation."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int, T: int, members: int):
        super().__init__()
        sizes = [in_dim] + [hidden] * (depth + 1) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out)))
            nn.init.uniform_(self.weights[-1], -bound, bound)
            nn.init.uniform_(self.biases[-1], -bound, bound)
        self.step_embed = nn.Parameter(torch.randn(members, T, hidden))  # nn.Embedding: N(0, 1)
        self.members, self.T = members, T

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        E = self.members
        if x.shape[0] % E:
            raise ValueError(f"rows must be a multiple of members = {E}, got {x.shape[0]}")
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],) or t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t must be integer steps of shape (B,) = ({x.shape[0]},), got {got}")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"t must lie in 0..{self.T - 1}, got {int(t.min())}..{int(t.max())}")
        n = x.shape[0] // E
        h = x.reshape(E, n, -1)  # (E, n, in)
        emb = self.step_embed[torch.arange(E)[:, None], t.reshape(E, n)]  # (E, n, H)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)  # (E, n, out_i)
            if i == 0:
                h = h + emb
            if i < last:
                h = F.leaky_relu(h, 0.2)  # the official code's activation in D
        return h.reshape(E * n, -1)


class DDGANMLPGenerator(nn.Module):
    """G(x_t, z, t) -> x0 prediction (B, D) for points; z enters beside x_t."""

    def __init__(self, cfg: DDGANMLPConfig | None = None, **overrides: object):
        super().__init__()
        self.cfg = cfg = make_config(cfg, DDGANMLPConfig, overrides)
        in_dim = cfg.dim + cfg.z_dim
        self.net = StepMLP(in_dim, cfg.dim, cfg.hidden, cfg.depth, cfg.T, cfg.members)

    def forward(self, x_t: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x_t, (self.cfg.dim,), "x_t")
        check_input(z, (self.cfg.z_dim,), "z")
        return self.net(torch.cat([x_t, z], dim=1), t)  # (B, D)


class DDGANMLPDiscriminator(nn.Module):
    """D(x_{t-1}, x_t, t) -> logits (B,): is x_{t-1} a real denoising of x_t? (eq. 5)"""

    def __init__(self, cfg: DDGANMLPConfig | None = None, **overrides: object):
        super().__init__()
        self.cfg = cfg = make_config(cfg, DDGANMLPConfig, overrides)
        self.net = StepMLP(2 * cfg.dim, 1, cfg.hidden, cfg.depth, cfg.T, cfg.members)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x_prev, (self.cfg.dim,), "x_prev")
        check_input(x_t, (self.cfg.dim,), "x_t")
        return self.net(torch.cat([x_prev, x_t], dim=1), t)[:, 0]  # (B,)


class DDGANMLPEps(nn.Module):
    """eps(x_t, t) (B, D): the generator's MLP without z, trained as a diffusion model."""

    def __init__(self, cfg: DDGANMLPConfig | None = None, **overrides: object):
        super().__init__()
        self.cfg = cfg = make_config(cfg, DDGANMLPConfig, overrides)
        self.net = StepMLP(cfg.dim, cfg.dim, cfg.hidden, cfg.depth, cfg.T, cfg.members)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x_t, (self.cfg.dim,), "x_t")
        return self.net(x_t, t)  # (B, D)


PARTS = (DDGANMLPGenerator, DDGANMLPDiscriminator, DDGANMLPEps)
Part = DDGANMLPGenerator | DDGANMLPDiscriminator | DDGANMLPEps


def stack(nets: Sequence[Part]) -> Part:
    """One ensemble whose member e is a copy of ``nets[e]`` (same class and config, one member
    each): build each under its own seed, stack, and train them all in one loop."""
    if not nets or any(not isinstance(n, PARTS) for n in nets):
        raise ValueError(
            "nets must be a non-empty list of DDGANMLP Generator, Discriminator or Eps"
        )
    kind, cfg = type(nets[0]), nets[0].cfg
    if any(type(n) is not kind or n.cfg != cfg for n in nets) or cfg.members != 1:
        raise ValueError("nets must share one class and one config with members = 1")
    with torch.random.fork_rng():  # the fresh weights are overwritten: leave the global RNG
        out = kind(replace(cfg, members=len(nets)))
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(torch.cat([dict(n.named_parameters())[name] for n in nets]))
    return out


def member(net: Part, e: int) -> Part:
    """Member e of an ensemble as a network of its own (a copy, members = 1)."""
    if not isinstance(net, PARTS):
        raise ValueError(f"net must be a DDGANMLP part, got {type(net).__name__}")
    check_int(e, "e", 0, net.cfg.members - 1)
    with torch.random.fork_rng():
        out = type(net)(replace(net.cfg, members=1))
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(dict(net.named_parameters())[name][e : e + 1])
    return out

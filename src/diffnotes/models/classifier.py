"""Noise-conditioned classifier p_phi(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021).

Own code: the encoder half of our U-Net (same blocks, same time embedding) then global average
pooling and a linear head, as guided-diffusion's ``EncoderUNetModel`` with ``pool='adaptive'``;
small and readable, no diffusers dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnotes.models.backbone import Backbone, BackboneConfig, TimeConditioned, pooled_head
from diffnotes.models.blocks import as_time, check_input, make_config
from diffnotes.util import check_int


@dataclass(kw_only=True)
class ClassifierConfig(BackboneConfig):
    """The data and labels of the classifier; its trunk's hyperparameters are `BackboneConfig`'s."""

    image_size: int = 16
    in_channels: int = 1
    num_classes: int = 10


class NoisyClassifier(TimeConditioned):
    """Logits (B, num_classes) of p(y | x_t, t) for noisy images x_t (B, C, H, W)."""

    def __init__(self, cfg: ClassifierConfig | None = None, **overrides: object):
        cfg = make_config(cfg, ClassifierConfig, overrides)
        check_int(cfg.num_classes, "num_classes", 2)  # one class: log p(y | x) = 0, no gradient
        super().__init__(cfg, cfg.image_size)
        self.encoder = Backbone(cfg, cfg.in_channels, 0, cfg.image_size, decoder=False)
        ch = self.encoder.out_channels
        self.head = nn.Sequential(*pooled_head(cfg.num_groups, ch))
        self.fc = nn.Linear(ch, cfg.num_classes)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, C_low)."""
        cfg = self.cfg
        check_input(x, (cfg.in_channels, cfg.image_size, cfg.image_size))
        emb = self.time_embed(as_time(t, x.shape[0], x.device))
        return self.head(self.encoder(x, emb))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x, t))  # (B, num_classes)

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_x log p_phi(y | x_t, t) (B, C, H, W): the term guidance scales (D&N Alg. 1-2)."""
        y = torch.as_tensor(y)
        if y.shape != (x.shape[0],) or y.is_floating_point():  # else y broadcasts or truncates
            raise ValueError(
                f"y must be (B,) = ({x.shape[0]},) class labels, got {tuple(y.shape)} {y.dtype}"
            )
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_p = F.log_softmax(self(x, t), dim=-1)
            selected = log_p[torch.arange(len(y), device=x.device), torch.as_tensor(y).long()]
            return torch.autograd.grad(selected.sum(), x)[0]

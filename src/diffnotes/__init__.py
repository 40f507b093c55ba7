"""diffnotes: the package every chapter of the diffusion study book shares.

``import diffnotes as dn`` gives the submodules (``dn.samplers``, ``dn.plot``, ...) and the names
a chapter uses (``dn.ddim``, ``dn.GaussianMixture``, ...). Both load on first use, so importing
diffnotes stays cheap and never pulls in diffusers (only ``dn.lora`` and ``dn.interop`` do).
"""

from __future__ import annotations

import importlib
from typing import Any

# Eager, and after the submodule import: `dn.profile` is the function, not the module.
from diffnotes.profile import PROFILES, Profile, profile

__version__ = "0.1.0"

SUBMODULES = (
    "schedules forward param sde likelihood analytic samplers guidance inpaint models data losses "
    "io train cache claims metrics recipes plot interop lora book video"
).split()

# name -> the submodule that defines it (one flat namespace for chapters)
EXPORTS: dict[str, str] = {
    name: module
    for module, names in {
        "schedules": (
            "DiscreteSchedule linear_schedule scaled_linear_schedule cosine_schedule get_schedule "
            "from_betas from_alphas_cumprod to_diffusers spaced_steps space_timesteps respace "
            "sigma_ladder"
        ),
        "forward": "q_sample q_posterior",
        "param": "eps_to_x0 x0_to_eps v_to_eps eps_to_v v_to_x0 x0_to_v eps_to_score score_to_eps "
        "x0_model score_model eps_model",
        "sde": "SDE VPSDE SubVPSDE VESDE reverse_sde predictor_corrector probability_flow "
        "time_steps",
        "likelihood": "vlb_bits_per_dim log_likelihood bits_per_dim",
        "analytic": "GaussianMixture ring_mixture ncsn_toy",
        "samplers": "ddpm ddim ddim_invert euler annealed_langevin langevin p_sample",
        "guidance": "classifier_free classifier_guidance classifier_grad",
        "interop": "from_diffusers_scheduler to_diffusers_scheduler unet_eps_model",
        "inpaint": "jump_schedule repaint replace_inpaint",
        "data": "two_d digits shapes sprites save_image_folder image_folder",
        "models": "UNet UNetConfig TimeMLP MLPConfig count_parameters",
        "losses": "eps_loss hybrid_loss dsm_loss sde_loss",
        "train": "train TrainResult loss_curve",
        "cache": "cached cache_dir",
        "metrics": "sliced_wasserstein energy_distance mode_stats noise_floor fd_digits "
        "fd_digits_floor class_accuracy class_entropy",
    }.items()
    for name in names.split()
}

__all__ = ["__version__", "PROFILES", "Profile", "profile", *SUBMODULES, *EXPORTS]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"diffnotes.{name}")
    if name in EXPORTS:
        value = getattr(importlib.import_module(f"diffnotes.{EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffnotes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""LoRA files in diffusers' format: write them atomically, load a pipeline, check the match."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# A (down) and B (up) factors under the names diffusers and peft write them.
LORA_KEY = re.compile(
    r"^(.*?)\.(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)"
    r"\.weight$"
)


@contextlib.contextmanager
def quiet():
    """Silence loading bars and known-harmless notices: diffusers' torch_dtype rename (we keep the
    name older diffusers understand), peft's note that a local base model has no hub config, and
    transformers' notice that image processors fall back to PIL without torchvision (SDXL uses
    none of them)."""
    import diffusers
    import transformers

    # loading bars are tqdm.auto: ipywidgets in a notebook, blank boxes in the static book
    logs = (diffusers.utils.logging, transformers.utils.logging)
    bars = [log.is_progress_bar_enabled() for log in logs]
    verbosity = transformers.utils.logging.get_verbosity()
    for log in logs:
        log.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated")
            warnings.filterwarnings("ignore", message="Could not find a config file")
            yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        for log, enabled in zip(logs, bars):
            if enabled:
                log.enable_progress_bar()


def sdxl_pipeline_class():
    """diffusers' StableDiffusionXLPipeline, imported without the torchvision fallback notice."""
    with quiet():
        from diffusers import StableDiffusionXLPipeline
    return StableDiffusionXLPipeline


def lora_layers(unet, text_encoder=None, text_encoder_2=None) -> dict[str, dict]:
    """diffusers-format LoRA state dicts of the peft-adapted models (None: not trained)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def one(model):
        if model is None:
            return None
        return convert_state_dict_to_diffusers(get_peft_model_state_dict(model))

    with quiet():
        return {
            "unet_lora_layers": one(unet),
            "text_encoder_lora_layers": one(text_encoder),
            "text_encoder_2_lora_layers": one(text_encoder_2),
        }


def save_lora(folder: str | Path, unet, text_encoder=None, text_encoder_2=None) -> Path:
    """Write ``folder``/pytorch_lora_weights.safetensors atomically (temp file + rename)."""
    StableDiffusionXLPipeline = sdxl_pipeline_class()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=folder))
    try:
        StableDiffusionXLPipeline.save_lora_weights(
            tmp, **lora_layers(unet, text_encoder, text_encoder_2), safe_serialization=True
        )
        with (tmp / WEIGHT_NAME).open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp / WEIGHT_NAME, folder / WEIGHT_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / WEIGHT_NAME


def lora_file(path: str | Path) -> Path:
    """The weights file of a LoRA given as a file or as a folder holding pytorch_lora_weights."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"lora {str(path)!r}: no such LoRA weights file")
    return path


def _module(root: torch.nn.Module, dotted: str) -> torch.nn.Module | None:
    try:
        return root.get_submodule(dotted)
    except AttributeError:
        return None


def check_lora_matches(pipe, path: str | Path) -> None:
    """Raise ValueError unless every LoRA pair in the file fits a linear layer of ``pipe``.

    diffusers skips keys it cannot place with at most a warning; a LoRA trained on another base
    model must fail loudly instead.
    """
    from safetensors import safe_open

    path = lora_file(path)
    roots = {
        "unet": pipe.unet,
        "text_encoder": pipe.text_encoder,
        "text_encoder_2": pipe.text_encoder_2,
    }
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        if not any(LORA_KEY.match(k) for k in keys):
            raise ValueError(f"LoRA file {path} holds no LoRA factors (lora_A/lora_B, down/up)")
        for key in keys:
            m = LORA_KEY.match(key)
            if m is None:
                continue
            head, factor = m.group(1), m.group(2)
            prefix, _, dotted = head.partition(".")
            root = roots.get(prefix)
            module = None
            if root is not None:  # text encoder keys may omit the CLIP "text_model." level
                module = _module(root, dotted) or _module(root, f"text_model.{dotted}")
            # A loaded adapter wraps the layer: its original lives at .base_layer.
            module = getattr(module, "base_layer", module)
            if not isinstance(module, torch.nn.Linear):
                raise ValueError(
                    f"LoRA file {path} does not match this pipeline: no linear "
                    f"layer {head!r} (trained on another model?)"
                )
            shape = f.get_slice(key).get_shape()
            down = factor in ("lora_A", "lora.down", "lora_linear_layer.down")
            want = module.in_features if down else module.out_features
            got = shape[1] if down else shape[0]
            if got != want:
                raise ValueError(
                    f"LoRA file {path} does not match this pipeline: {key} has "
                    f"{got} features where the layer has {want}"
                )


def load_pipeline(
    model: str,
    *,
    lora: str | Path | None = None,
    vae: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """StableDiffusionXLPipeline from a folder (or cached Hub id), optionally with a LoRA."""
    from diffusers import AutoencoderKL

    from diffnotes.lora.sources import check_model_source

    StableDiffusionXLPipeline = sdxl_pipeline_class()

    check_model_source("pretrained_model_name_or_path", model, "model_index.json")
    kwargs = {}
    if vae is not None:
        check_model_source("pretrained_vae_model_name_or_path", vae, "config.json")
        kwargs["vae"] = AutoencoderKL.from_pretrained(vae, torch_dtype=dtype)
    with quiet():
        pipe = StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        check_lora_matches(pipe, lora)
        path = lora_file(lora)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    return pipe.to(device)

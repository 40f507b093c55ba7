"""The reading list's fine-tune as flags, and the settings that fit it on each Colab GPU.

Memory figures behind the choices (cited in chapter 15): diffusers' SDXL DreamBooth LoRA
README reports < 16 GB of VRAM with gradient checkpointing, 8-bit Adam and fp16
(examples/dreambooth/README_sdxl.md, "Dog toy example with < 16GB VRAM"); its text-to-image
SDXL README says LoRA fine-tuning fits consumer GPUs like the T4 (examples/text_to_image/
README_sdxl.md). SDXL's UNet has 2.6 B parameters and its text encoders 0.8 B (Podell et al.
2023, Sec. 2.1 and Table 1), i.e. about 6.8 GB of fp16 weights before any activation.
"""

from __future__ import annotations

from diffnotes.lora.cli import READING_LIST_ARGV, parse_args


def to_argv(**flags) -> list[str]:
    """Keyword flags -> argv: True -> ``--name``; False/None -> omitted; else ``--name value``."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not None and value is not False:
            argv += [f"--{name}", str(value)]
    return argv


def reading_list_argv(**overrides) -> list[str]:
    """The reading list's flags with ``overrides`` applied (a value of None/False drops one)."""
    args = parse_args(READING_LIST_ARGV)
    switches = {a.dest for a in _parser()._actions if a.nargs == 0}
    merged = {k: v for k, v in vars(args).items() if v is not None}
    merged.update(overrides)
    defaults = vars(parse_args(["--pretrained_model_name_or_path", "x"]))
    keep = {}
    for k, v in merged.items():
        if k in overrides or v != defaults.get(k):  # only flags that differ from the defaults
            keep[k] = v if k not in switches else bool(v)
    return to_argv(**keep)


def _parser():
    from diffnotes.lora.cli import build_parser

    return build_parser()


# (name, GiB) -> settings for the reading list's run; T4: 15 GiB, L4: 22 GiB, A100: 40 GiB.
def colab_settings(
    gpu_name: str | None, memory_gib: float | None = None, has_bitsandbytes: bool = False
) -> dict:
    """Overrides that make the reading list's fine-tune fit a Colab GPU (None: no GPU)."""
    if gpu_name is None:
        return {}
    small = memory_gib is not None and memory_gib < 20 or "T4" in gpu_name
    if small:  # T4 (16 GB, no bf16, no TF32): trade compute for memory
        return {
            "resolution": 768,
            "gradient_checkpointing": True,
            "use_8bit_adam": has_bitsandbytes,
            "allow_tf32": False,
            "dataloader_num_workers": 2,
        }
    return {
        "resolution": 1024,
        "gradient_checkpointing": "L4" in gpu_name,
        "dataloader_num_workers": 2,
    }

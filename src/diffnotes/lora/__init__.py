"""SDXL LoRA: the reading list's fine-tune (trainer, inference, tiny pipeline for CPU runs).

The only diffnotes package besides ``interop`` that imports diffusers, and only inside
functions, so ``import diffnotes.lora`` stays cheap.
"""

from __future__ import annotations

from diffnotes.lora.cli import READING_LIST_ARGV, READING_LIST_COMMAND, parse_args
from diffnotes.lora.inference import compare, generate, grid
from diffnotes.lora.recipes import colab_settings, reading_list_argv
from diffnotes.lora.report import read_log
from diffnotes.lora.tiny import tiny_sdxl
from diffnotes.lora.weights import WEIGHT_NAME, check_lora_matches, load_pipeline


def train(argv: list[str] | None = None, **flags):
    """Run the trainer in this process, from command-line flags and/or keyword flags.

    ``train(pretrained_model_name_or_path=path, train_text_encoder=True, rank=4)``: True adds
    a switch, False/None leaves the flag out. Returns the path of the LoRA weights file.
    """
    from diffnotes.lora.recipes import to_argv
    from diffnotes.lora.train_sdxl import train as run

    return run(parse_args(list(argv or []) + to_argv(**flags)))


__all__ = [
    "READING_LIST_ARGV",
    "READING_LIST_COMMAND",
    "WEIGHT_NAME",
    "check_lora_matches",
    "colab_settings",
    "compare",
    "generate",
    "grid",
    "load_pipeline",
    "parse_args",
    "read_log",
    "reading_list_argv",
    "tiny_sdxl",
    "train",
]

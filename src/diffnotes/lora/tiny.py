"""A tiny, randomly initialised SDXL-architecture pipeline, written to disk with no download.

Same parts and wiring as SDXL base 1.0 (Podell et al. 2023, arXiv 2307.01952): two CLIP text
encoders (the second with a projection, whose pooled output conditions the UNet), CLIP BPE
tokenizers with ``model_max_length=77``, a KL VAE with the 8x downsampling of SDXL, and a UNet
with ``addition_embed_type="text_time"`` (pooled text embedding + six size/crop time ids).
Only the widths are small, so every code path of the trainer runs on a CPU in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

# Widths: text encoders 32 each -> cross-attention 64 (SDXL: 768 + 1280 = 2048).
TEXT_HIDDEN = 32
PROJECTION_DIM = 32
TIME_EMBED_DIM = 8  # SDXL: 256
VAE_SCALING = 0.13025  # SDXL's VAE scaling factor
LATENT_SIZE = 8  # default image 64 px = 8 latents x 8 (VAE downsampling)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer(path: str | Path, *, words: tuple[str, ...] = ()) -> Path:
    """Write a CLIP BPE tokenizer (vocab.json, merges.txt, 77 tokens) that CLIPTokenizer loads.

    The vocabulary holds every byte (alone and word-final, ``</w>``) so any text tokenizes,
    plus merges that make each word in ``words`` one token, the way CLIP's real vocabulary
    holds common words.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in words:
        # Merge left to right: "c i r c l e</w>" -> "ci" -> "cir" ... -> "circle</w>".
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        acc = pieces[0]
        for piece in pieces[1:]:
            merged = acc + piece
            if merged not in vocab:
                merges.append(f"{acc} {piece}")
                vocab.append(merged)
            acc = merged
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,  # SDXL's context length; the pipeline pads to it
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return path


# Words of the shapes captions ("a red circle on a blue background") become single tokens.
CAPTION_WORDS = (
    "a",
    "on",
    "background",
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "black",
    "purple",
    "orange",
    "cyan",
    "magenta",
    "grey",
    "gray",
    "an",
    "old",
    "book",
    "illustration",
    "of",
    "the",
    "in",
    "with",
)


def tiny_sdxl(path: str | Path, *, seed: int = 0) -> Path:
    """Write a random tiny SDXL pipeline to ``path`` that StableDiffusionXLPipeline loads."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from diffnotes.lora.weights import quiet, sdxl_pipeline_class

    StableDiffusionXLPipeline = sdxl_pipeline_class()
    path = Path(path)
    tok_dir = write_clip_tokenizer(path / "_tokenizer_src", words=CAPTION_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    vocab_size = len(tokenizer)

    def text_config(layers: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=PROJECTION_DIM,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config(3))  # SDXL: CLIP ViT-L, penultimate layer used
    text_encoder_2 = CLIPTextModelWithProjection(text_config(3))  # SDXL: OpenCLIP bigG
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1),
        use_linear_projection=True,
        cross_attention_dim=2 * TEXT_HIDDEN,  # both encoders' hidden states concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        # 6 time ids (original size, crop top-left, target size) + pooled text embedding
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + PROJECTION_DIM,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),  # 4 blocks: 8x downsampling as in SDXL
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=LATENT_SIZE * 8,
        scaling_factor=VAE_SCALING,
        force_upcast=True,
    )
    scheduler = EulerDiscreteScheduler(  # SDXL base 1.0's scheduler config
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=CLIPTokenizer.from_pretrained(tok_dir),
        unet=unet,
        scheduler=scheduler,
    )
    with quiet():  # no "Writing model shards" widget bar in notebooks
        pipe.save_pretrained(path)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return path

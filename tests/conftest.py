"""Fixtures shared by test modules: the tiny SDXL pipeline and a small captioned image folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A randomly initialised SDXL-architecture pipeline on disk (needs diffusers)."""
    from diffnotes.lora import tiny_sdxl

    return tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    """Eight 64 x 64 `shapes` images with captions, as an image folder with metadata.jsonl."""
    from diffnotes import data

    s = data.shapes(8, 64, seed=0)
    return data.save_image_folder(s.images, s.captions, tmp_path_factory.mktemp("shapes") / "d")

"""The book's structure: notebooks stripped, tagged, in the toc, installable on Colab; profiles."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import yaml

from diffnotes.book import source_key
from diffnotes.profile import PROFILES, profile

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALL_NOTEBOOKS = NOTEBOOKS + sorted((ROOT / "book").glob("*.ipynb"))
PARTS = [
    "Foundations",
    "Guidance",
    "Diffusion meets GANs",
    "Latent diffusion",
    "Inpainting",
    "Video",
    "Fine-tuning",
]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_toc_entry_exists() -> None:
    for entry in toc_files():
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), entry


def test_parts_in_reading_order() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    captions = [p["caption"] for p in toc["parts"] if p["caption"] in PARTS]
    assert captions == sorted(captions, key=PARTS.index)
    if "Fine-tuning" in captions:
        assert toc["parts"][-2]["caption"] == "Fine-tuning" or toc["parts"][-1]["caption"] in (
            "Fine-tuning",
            "Appendix",
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_toc(path: Path) -> None:
    assert f"notebooks/{path.stem}" in toc_files(), f"{path.name} is missing from _toc.yml"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path: Path) -> None:
    for cell in code_cells(path):
        assert not cell.get("outputs"), f"{path.name} has outputs: run `make strip`"
        assert cell.get("execution_count") is None, f"{path.name} has execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_parameters_cell_and_claims(path: Path) -> None:
    cells = code_cells(path)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells)
    source = "\n".join("".join(c["source"]) for c in cells)
    assert f'dn.claims.chapter("{path.stem}")' in source, "the claim log is named after the file"
    assert "claims.check(" in source, "a chapter asserts its claim through dn.claims"
    assert "claims.table()" in source, "'What we measured' is built from the claim records"
    assert "-" in path.stem and path.stem[:2].isdigit(), "names look like 01-ddpm.ipynb"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_claims_go_through_dn_claims(path: Path) -> None:
    # a bare assert is neither recorded nor tabled: claims use claims.check, sanity checks
    # claims.sanity (torch.testing.assert_close for the equation checks is fine)
    for cell in code_cells(path):
        for line in "".join(cell["source"]).splitlines():
            assert not line.lstrip().startswith("assert "), f"{path.name}: {line.strip()}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_seed_comes_from_the_profile(path: Path) -> None:
    params = [c for c in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not params:
        pytest.skip("no parameters cell (a page without experiments)")
    assert "seed = P.seed" in "".join(params[0]["source"]), "DIFFNOTES_SEED reaches the chapter"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_on_colab(path: Path) -> None:
    first = code_cells(path)[0]
    source = "".join(first["source"])
    assert "google.colab" in source and "remove-cell" in first["metadata"].get("tags", [])
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert f'REPO = "{url}"' in source, "the Colab cell must install from repository.url"


def test_colab_cell_says_how_to_install_when_missing() -> None:
    source = "".join(code_cells(NOTEBOOKS[0])[0]["source"]) if NOTEBOOKS else None
    if source is None:
        pytest.skip("no notebook yet")
    with mock.patch("importlib.util.find_spec", return_value=None):
        with pytest.raises(ModuleNotFoundError, match="make install"):
            exec(compile(source, "colab-cell", "exec"), {})


def test_launch_buttons_point_at_colab() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["repository"]["branch"] == "main"
    assert config["only_build_toc_files"] is True


def test_profile_names_and_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROFILES:
        monkeypatch.setenv("DIFFNOTES_PROFILE", name)
        p = profile()
        assert p.name == name
        assert p.pick(ci=1, book=2, gpu=3) == {"ci": 1, "book": 2, "gpu": 3}[name]
    monkeypatch.delenv("DIFFNOTES_PROFILE")
    assert profile().name in ("book", "gpu")


def test_unknown_profile_names_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFNOTES_PROFILE", "fast")
    with pytest.raises(ValueError, match="DIFFNOTES_PROFILE='fast'.*ci, book, gpu"):
        profile()


def test_book_cache_key_follows_source_and_profile(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "diffnotes"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    before = source_key("book", tmp_path)
    assert source_key("ci", tmp_path) != before
    (pkg / "a.py").write_text("x = 2\n")
    assert source_key("book", tmp_path) != before

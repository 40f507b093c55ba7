"""The book's structure: notebooks stripped, tagged, in the toc, installable on Colab; profiles."""

from __future__ import annotations

import json
import re
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


# --------------------------------------------------------------------------------------------
# The pages describe the book as it is (issue #17): derived from _toc.yml, so they stay true
# as chapters land.

READING_LIST = ROOT / "book" / "reading-list.md"
RESOURCES = ROOT / "book" / "resources.md"
# every chapter ends with "Try it on Colab" and "Further reading"
ONWARD_CHAPTERS = [path.stem for path in NOTEBOOKS]


def toc_chapters() -> dict[str, Path]:
    """The notebooks in _toc.yml, by stem."""
    return {
        Path(f).name: ROOT / f"{f}.ipynb"
        for f in toc_files()
        if f.startswith("notebooks/") and (ROOT / f"{f}.ipynb").is_file()
    }


def markdown_of(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def entries(text: str) -> list[str]:
    """The paragraphs of a page that open with a bold title (one reading-list or resource entry)."""
    return [p for p in re.split(r"\n\s*\n", text) if p.startswith("**")]


def test_reading_list_links_each_paper_to_its_chapter_or_says_planned() -> None:
    chapters = toc_chapters()
    # a chapter covers a paper when its title cell links the paper's arXiv page
    covers = {stem: markdown_of(path).split("\n## ")[0] for stem, path in chapters.items()}
    any_planned = False
    for entry in entries(READING_LIST.read_text()):
        found = re.search(r"arxiv\.org/abs/(\d{4}\.\d{4,5})", entry)
        if not found:
            continue
        title = entry.splitlines()[0]
        mine = sorted(s for s, text in covers.items() if f"arxiv.org/abs/{found[1]}" in text)
        linked = re.findall(r"\{doc\}`\.\./notebooks/([^`]+)`", entry)
        if mine:
            assert "Chapter planned" not in entry and sorted(linked) == mine, (
                f"reading-list.md, {title}: the chapter(s) {mine} exist; write "
                + ", ".join(f"Chapter: {{doc}}`../notebooks/{s}`" for s in mine)
                + " instead of 'Chapter planned'"
            )
        else:
            any_planned = True
            assert "Chapter planned" in entry and not linked, (
                f"reading-list.md, {title}: no chapter in _toc.yml covers it: 'Chapter planned'"
            )
    if any_planned:
        assert "Each entry has a chapter" not in READING_LIST.read_text()


def test_intro_marks_parts_without_chapters_as_planned() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    present = {p["caption"] for p in toc["parts"]}
    text = (ROOT / "book" / "intro.md").read_text()
    for part in PARTS:
        bullet = re.search(rf"^- \*\*{re.escape(part)}\*\*(.*)$", text, re.M)
        assert bullet, f"intro.md has no bullet for the part {part!r}"
        planned = "(chapters planned)" in bullet[1]
        assert planned == (part not in present), (
            f"intro.md: the part {part!r} is {'in' if part in present else 'not in'} _toc.yml; "
            f"{'remove' if planned else 'add'} '(chapters planned)'"
        )
    assert "The appendix holds the {doc}`reading-list`" not in text  # it opens the book


def test_resources_are_linked_from_the_chapters_they_name() -> None:
    chapters = {stem: markdown_of(path) for stem, path in toc_chapters().items()}
    for entry in entries(RESOURCES.read_text()):
        title = entry.splitlines()[0]
        urls = re.findall(r"https?://[^\s)>]+", entry)
        named = sorted(re.findall(r"\{doc\}`\.\./notebooks/([^`]+)`", entry))
        linking = sorted(s for s, text in chapters.items() if any(u in text for u in urls))
        assert linking, f"resources.md, {title}: no chapter's Further reading links it"
        assert named == linking, f"resources.md, {title}: 'Chapters:' should list {linking}"


@pytest.mark.parametrize("stem", ONWARD_CHAPTERS)
def test_chapter_ends_with_colab_and_further_reading(stem: str) -> None:
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    headings = re.findall(r"^## (.+)$", markdown_of(path), re.M)
    assert headings[-2:] == ["Try it on Colab", "Further reading"], headings[-3:]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    repo = config["url"].removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{repo}/blob/{config['branch']}/"
    assert f"{colab}notebooks/{stem}.ipynb" in markdown_of(path), "the direct Colab link"


def test_every_cited_key_is_in_the_bibliography() -> None:
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.M))
    pages = [*ALL_NOTEBOOKS, *(ROOT / "book").glob("*.md")]
    for page in pages:
        text = page.read_text()
        for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{page.name}: {{cite}}`{key}` is not in references.bib"


def test_everything_the_readme_runs_is_installed() -> None:
    names = {
        re.split(r"[<>=!\[ ]", line.strip())[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }
    # `jupyter lab`, the reading list's --dataset_name, the offline MathJax of the book
    assert {"jupyterlab", "datasets", "sphinx-mathjax-offline"} <= names
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]


BUILT = ROOT / "_build" / "html"
MACHINE_PATHS = re.compile(r"(/tmp/|/home/|/root/|/Users/|/work/)[\w.-]+")


@pytest.mark.skipif(not (BUILT / "index.html").is_file(), reason="no built book (make book)")
def test_built_book_loads_no_outside_script_and_shows_no_machine_path() -> None:
    pages = sorted(BUILT.rglob("*.html"))
    assert (BUILT / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not bundled"
    for page in pages:
        html = page.read_text(errors="replace")
        outside = re.findall(r"<script[^>]*\ssrc=\"(?:https?:)?//[^\"]+\"", html)
        assert not outside, f"{page.relative_to(BUILT)} loads {outside[0]}"
        shown = MACHINE_PATHS.search(html)
        assert not shown, f"{page.relative_to(BUILT)} shows the path {shown[0]}"
        # a Markdown table a cell displays must come out as a table, not as "| a | b |" text
        raw = re.search(r"<p>\|[^<\n]*\|\n\|", html)  # a paragraph of "| a | b |" lines
        assert not raw, f"{page.relative_to(BUILT)} shows an unrendered table: {raw[0]!r}"


def test_child_env_shortens_the_openmp_spin_unless_set(monkeypatch):
    from diffnotes.util import child_env

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    env = child_env(DIFFNOTES_PROFILE="ci")
    assert env["GOMP_SPINCOUNT"] == "1000" and env["DIFFNOTES_PROFILE"] == "ci"
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")  # the reader's own choice wins
    assert child_env()["GOMP_SPINCOUNT"] == "300000"

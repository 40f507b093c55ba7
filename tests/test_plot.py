"""Figures: grids, strips, scatters, curves, animations and the widget's static fallback."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffnotes import plot  # noqa: E402


def test_tile_lays_out_rows() -> None:
    images = torch.linspace(-1, 1, 6 * 3 * 4 * 5).reshape(6, 3, 4, 5)
    canvas = plot.tile(images, nrow=3, pad=1)
    assert canvas.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert canvas.min() >= 0 and canvas.max() <= 1
    torch.testing.assert_close(
        torch.as_tensor(canvas[1:5, 1:6]), ((images[0] + 1) / 2).permute(1, 2, 0).double()
    )


def test_grid_strip_scatter_curves_make_figures() -> None:
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    for fig in (
        plot.grid(images),
        plot.strip(images, ["a", "b", "c", "d"]),
        plot.scatter({"x": torch.randn(10, 2), "y": torch.randn(5, 2)}, lim=3),
        plot.curves([1, 2, 3], {"a": [1, 2, 3]}, hline={"floor": 1.5}, logx=True),
    ):
        assert fig.axes
        plt.close(fig)


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="images"):
        plot.grid(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="labels"):
        plot.strip(torch.zeros(2, 1, 4, 4), ["one"])
    with pytest.raises(ValueError, match="panels"):
        plot.scatter({"bad": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="slider"):
        plot.widget(lambda ax: None)


def test_widget_static_fallback_sweeps_first_slider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFNOTES_STATIC", "1")
    seen = []
    fig = plot.widget(lambda ax, t, eta: seen.append((t, eta)), t=[0, 10, 20], eta=(0.0, 1.0, 0.1))
    assert seen == [(0, 0.0), (10, 0.0), (20, 0.0)]
    assert [ax.get_title() for ax in fig.axes] == ["t = 0", "t = 10", "t = 20"]
    plt.close(fig)


def test_animate_returns_html() -> None:
    frames = [torch.rand(4, 1, 8, 8) * 2 - 1 for _ in range(3)]
    html = plot.animate(frames)
    assert "<script" in html.data


def test_widget_in_a_kernel_builds_sliders(monkeypatch: pytest.MonkeyPatch) -> None:
    # `make test` runs notebooks headless with DIFFNOTES_STATIC=1, so the kernel branch is
    # checked here: a list becomes a selection slider, (min, max, step) an int or float slider
    import IPython
    import ipywidgets

    monkeypatch.delenv("DIFFNOTES_STATIC", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: SimpleNamespace(kernel=object()))
    calls = []
    monkeypatch.setattr(ipywidgets, "interact", lambda fn, **controls: calls.append((fn, controls)))
    seen = []
    out = plot.widget(
        lambda ax, t, eta, k: seen.append((t, eta, k)), t=[0, 10], eta=(0.0, 1.0, 0.5), k=(1, 5, 1)
    )
    assert out is None and len(calls) == 1
    show, controls = calls[0]
    assert isinstance(controls["t"], ipywidgets.SelectionSlider)
    assert controls["t"].options == (0, 10)
    assert isinstance(controls["eta"], ipywidgets.FloatSlider)
    assert isinstance(controls["k"], ipywidgets.IntSlider)
    show(t=10, eta=0.5, k=3)
    assert seen == [(10, 0.5, 3)]
    plt.close("all")


def test_table_formats_floats_and_refuses_ragged_rows():
    from diffnotes.plot import table

    md = table(["arm", "score", "n"], [["a", 0.12345, 3], ["b", "1.5 ± 0.2", 10]])
    text = getattr(md, "data", md)
    assert text.splitlines() == [
        "| arm | score | n |",
        "| --- | --- | --- |",
        "| a | 0.123 | 3 |",
        "| b | 1.5 ± 0.2 | 10 |",
    ]
    assert "| 0.1 |" in getattr(table(["x"], [[0.123]], fmt=".1f"), "data", "")
    assert "| max \\|x\\| |" in getattr(table(["q"], [["max |x|"]]), "data", "")
    with pytest.raises(ValueError, match="must have 2 cells"):
        table(["a", "b"], [[1.0]])

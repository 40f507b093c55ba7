"""Figures a chapter needs: image grids and strips, 2-D scatters, curves, animations, widgets.

Widgets are for readers with a kernel. The static book has none (ipywidgets render blank
there), so `widget` draws the same thing as a row of panels whenever `profile().static` is set
or ipywidgets is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from diffnotes.profile import profile
from diffnotes.util import check_callable, check_int, check_number

Slider = Sequence[float] | tuple[float, float, float]


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) in [0, 1] for imshow."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"images must be a (B, C, H, W) tensor, got shape {shape}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if images.shape[0] == 0 or not torch.isfinite(images).all():  # NaN would show as blank
        raise ValueError(f"images must be non-empty and finite, got shape {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return x


def _show(ax: Axes, image: np.ndarray, title: str | None = None) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


def tile(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """One (H', W', C) array of the images laid out in rows of ``nrow``."""
    x = to_numpy_images(images)
    b, h, w, c = x.shape
    if nrow is not None:
        check_int(nrow, "nrow", 1)
    check_int(pad, "pad", 0)
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol_rows = math.ceil(b / nrow)
    canvas = np.ones((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, c))
    for i in range(b):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) :][:, :w] = x[i]
    return canvas


def grid(
    images: torch.Tensor,
    nrow: int | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    size: float = 4.0,
) -> Figure:
    """A grid of images, ``nrow`` per row (default: square)."""
    check_number(size, "size", positive=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(size, size))
    _show(ax, tile(images, nrow), title)
    return ax.figure


def strip(
    images: torch.Tensor,
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    size: float = 1.4,
) -> Figure:
    """One row of images with a label under each (e.g. x_t for several t)."""
    x = to_numpy_images(images)
    check_number(size, "size", positive=True)
    if isinstance(labels, str):  # one string would label each image with one character
        raise ValueError(f"labels must be a list of strings (one per image), got {labels!r}")
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"labels has {len(labels)} entries for {len(x)} images")
    fig, axes = plt.subplots(1, len(x), figsize=(size * len(x), size + 0.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        _show(ax, x[i])
        if labels is not None:
            ax.set_xlabel(labels[i], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def scatter(
    panels: dict[str, torch.Tensor],
    *,
    lim: float | None = None,
    size: float = 3.0,
    s: float = 2.0,
) -> Figure:
    """Side-by-side scatters of 2-D point sets, one panel per entry of ``panels``."""
    if not isinstance(panels, dict) or not panels:
        raise ValueError(
            f"panels must be a non-empty dict of name -> (N, 2) points, got {type(panels).__name__}"
        )
    if lim is not None:
        check_number(lim, "lim", positive=True)
    check_number(size, "size", positive=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, (name, pts) in zip(axes[0], panels.items()):
        p = torch.as_tensor(pts).detach().float().cpu() if not isinstance(pts, str) else None
        if p is None or p.dim() != 2 or p.shape[1] != 2:
            raise ValueError(
                f"panels[{name!r}] must be (N, 2) points, got {getattr(p, 'shape', pts)}"
            )
        ax.scatter(p[:, 0], p[:, 1], s=s, alpha=0.5, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        if lim is not None:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    fig.tight_layout()
    return fig


def curves(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    hline: dict[str, float] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Line plot of several named series over one x axis, with optional reference lines."""
    if not isinstance(ys, dict) or not isinstance(hline or {}, dict):
        raise ValueError("ys and hline must be dicts of name -> values (hline: name -> number)")
    for name, value in (hline or {}).items():  # a NaN line is silently not drawn
        if not math.isfinite(float(value)):
            raise ValueError(f"hline[{name!r}] must be a finite number, got {value!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, y in ys.items():
        if len(y) != len(x):
            raise ValueError(f"ys[{name!r}] has {len(y)} values for {len(x)} x values")
        ax.plot(list(x), list(y), marker="o", ms=3, label=name)
    for name, value in (hline or {}).items():
        ax.axhline(value, ls="--", c="gray", lw=1)
        ax.annotate(name, (ax.get_xlim()[0], value), fontsize=8, va="bottom", color="gray")
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def animate(frames: Sequence[torch.Tensor], *, interval: int = 120, nrow: int | None = None):
    """An HTML animation (plays in the static book too) of image batches, one grid per frame."""
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    if len(frames) == 0:
        raise ValueError("frames must not be empty")
    check_int(interval, "interval", 1)
    tiles = [tile(f, nrow) for f in frames]
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    gray = tiles[0].shape[-1] == 1
    first = tiles[0][..., 0] if gray else tiles[0]
    im = ax.imshow(first, cmap="gray" if gray else None, vmin=0, vmax=1)
    ax.axis("off")

    def update(i: int):
        im.set_data(tiles[i][..., 0] if gray else tiles[i])
        return (im,)

    anim = FuncAnimation(fig, update, frames=len(tiles), interval=interval, blit=True)
    html = HTML(anim.to_jshtml(default_mode="once"))
    plt.close(fig)
    return html


def _slider_values(name: str, spec: Slider) -> list[float]:
    if isinstance(spec, tuple) and len(spec) == 3:
        lo, hi, step = spec
        if not lo < hi or step <= 0:
            raise ValueError(f"slider {name!r} must be (min, max, step) with min < max, step > 0")
        return list(np.linspace(lo, hi, 5))
    if isinstance(spec, str) or not hasattr(spec, "__iter__"):
        raise ValueError(
            f"slider {name!r} must be a list of values or (min, max, step), got {spec!r}"
        )
    values = list(spec)
    if not values:
        raise ValueError(f"slider {name!r} has no values")
    return values


def widget(
    draw: Callable[..., None], *, panel_size: float = 2.6, **sliders: Slider
) -> Figure | None:
    """A slider widget over ``draw(ax, **values)``; in the static book, a row of its panels.

    Each slider is a list of values (a selection slider) or ``(min, max, step)``. The static
    figure sweeps the first slider over its values (at most 6) with the others at their first.
    """
    if not sliders:
        raise ValueError("widget needs at least one slider, e.g. t=[0, 250, 500, 999]")
    check_callable(draw, "draw", "(ax, **values)")
    check_number(panel_size, "panel_size", positive=True)
    values = {name: _slider_values(name, spec) for name, spec in sliders.items()}
    if not profile().static:
        try:
            import ipywidgets
            from IPython import get_ipython

            interactive = get_ipython() is not None and hasattr(get_ipython(), "kernel")
        except ImportError:
            interactive = False
        if interactive:
            controls = {}
            for name, spec in sliders.items():
                if isinstance(spec, tuple) and len(spec) == 3:
                    is_int = all(float(v).is_integer() for v in spec)
                    cls = ipywidgets.IntSlider if is_int else ipywidgets.FloatSlider
                    controls[name] = cls(min=spec[0], max=spec[1], step=spec[2], value=spec[0])
                else:
                    controls[name] = ipywidgets.SelectionSlider(options=values[name])

            def show(**kw):
                fig, ax = plt.subplots(figsize=(panel_size * 1.5, panel_size * 1.5))
                draw(ax, **kw)
                plt.show()

            ipywidgets.interact(show, **controls)
            return None
    first, *rest = values
    sweep = values[first]
    if len(sweep) > 6:
        sweep = [sweep[int(i)] for i in np.linspace(0, len(sweep) - 1, 6)]
    fixed = {name: values[name][0] for name in rest}
    fig, axes = plt.subplots(
        1, len(sweep), figsize=(panel_size * len(sweep), panel_size), squeeze=False
    )
    for ax, value in zip(axes[0], sweep):
        draw(ax, **{first: value}, **fixed)
        label = f"{value:g}" if isinstance(value, (int, float)) else str(value)
        ax.set_title(f"{first} = {label}", fontsize=9)
    fig.tight_layout()
    return fig


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, fmt: str = ".3f") -> object:
    """A Markdown table for ``display`` (IPython Markdown; plain text outside IPython).

    Floats are written with ``fmt``; anything else (a string already formatted, an int) with str;
    a "|" inside a cell is escaped. Every row must have as many cells as ``header``.
    """
    if isinstance(header, str) or isinstance(rows, str) or any(isinstance(r, str) for r in rows):
        raise ValueError("header and each row must be lists of cells, not one string")
    try:
        format(1.0, fmt)
    except (TypeError, ValueError):
        raise ValueError(f"fmt must be a float format such as '.3f', got {fmt!r}") from None
    if not header or any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row of the table must have {len(header)} cells (the header's)")

    def cell(value: object) -> str:
        text = format(value, fmt) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")  # |x| or p(x|y) in a cell must not split it

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython is in requirements
        return text
    return Markdown(text)

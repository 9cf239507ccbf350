"""Pictures written to files: matplotlib on its file-only backend, and PNGs written atomically (a killed run
never leaves half a picture); grids of pictures that explain themselves (column titles, row labels, a legend of
the colours used, every panel at one scale)."""

import functools
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .files import write_atomically


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures go to files, no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Union[str, Path], dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        pyplot().close(fig)


PANEL_PX = 192  # the largest panel's longer side on the page, in pixels (small images are enlarged to it)
MAX_PANEL_PX = 384  # larger images are shrunk to this


def grid_figure(
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    legend: Sequence[Tuple[str, Sequence[int]]] = (),
    row_labels: Optional[Sequence[str]] = None,
    title: str = "",
    legend_title: str = "",
):
    """A matplotlib figure of `rows` (each a list of HxWx3 uint8 images, one per column) under `column_titles`,
    with `legend` (label, RGB 0-255) patches below. Every panel shares one pixel scale: its axes span the
    largest image's size, and a smaller image fills only its share of it."""
    plt = pyplot()
    from matplotlib.patches import Patch

    n_rows, n_cols = len(rows), len(column_titles)
    if n_rows == 0 or any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row needs {n_cols} images (one per column title)")
    height = max(img.shape[0] for r in rows for img in r)
    width = max(img.shape[1] for r in rows for img in r)
    side = max(height, width)
    scale = PANEL_PX / side if side < PANEL_PX else min(1.0, MAX_PANEL_PX / side)
    dpi = 100
    panel_w, panel_h = width * scale / dpi, height * scale / dpi
    top = 0.45 + (0.35 if title else 0.0)
    legend_rows = -(-len(legend) // 6) if legend else 0
    bottom = 0.15 + 0.28 * legend_rows + (0.25 if legend_title else 0.0)
    left = 0.5 if row_labels else 0.1
    fig_w, fig_h = left + n_cols * (panel_w + 0.1), top + bottom + n_rows * (panel_h + 0.1)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(max(fig_w, 4.0), fig_h),
        dpi=dpi,
        squeeze=False,
        gridspec_kw=dict(wspace=0.04, hspace=0.06),
    )
    fig.subplots_adjust(
        left=left / max(fig_w, 4.0), right=1 - 0.05 / max(fig_w, 4.0), top=1 - top / fig_h, bottom=bottom / fig_h
    )
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i][j]
            h, w = img.shape[:2]
            ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:
                ax.set_title(column_titles[j], fontsize=10)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=9)
    if legend:
        handles = [
            Patch(facecolor=np.asarray(rgb, dtype=float) / 255.0, edgecolor="0.3", label=label) for label, rgb in legend
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(6, len(handles)),
            fontsize=9,
            frameon=False,
            title=legend_title or None,
            title_fontsize=9,
        )
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


READABLE_PX = 512  # a picture for people: a smaller image is enlarged, by whole pixels, towards this longer side
LEGEND_FONT_PX = 16


@functools.lru_cache(maxsize=None)
def font_file() -> Optional[str]:
    """A TrueType font for legible text on pictures: matplotlib's DejaVu Sans (None without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
    return path if os.path.isfile(path) else None


def font(size: int):
    """A PIL font of `size` pixels: DejaVu Sans where it is found, else PIL's own scalable default."""
    from PIL import ImageFont

    path = font_file()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def enlargement(height: int, width: int, target: int = READABLE_PX) -> int:
    """The whole-pixel factor that brings an image's longer side closest to `target` without passing it (at least
    1: a large image keeps its size)."""
    return max(1, target // max(height, width, 1))


def with_legend(image: np.ndarray, entries: Sequence[Tuple[str, Sequence[int]]], title: str = "") -> np.ndarray:
    """`image` (HxWx3 uint8) above a white strip that reads `title` and then each (label, RGB 0-255) entry as a
    colour swatch and its label, wrapped to the picture's width."""
    from PIL import Image, ImageDraw

    face = font(LEGEND_FONT_PX)
    pad, swatch, gap = 8, LEGEND_FONT_PX, 14
    items = ([(title, None)] if title else []) + [(str(label), rgb) for label, rgb in entries]
    width = max(image.shape[1], 320)
    lines, line, x = [], [], pad
    for text, rgb in items:
        w = face.getbbox(text)[2] + (swatch + 5 if rgb is not None else 0)
        if line and x + w > width - pad:
            lines.append(line)
            line, x = [], pad
        line.append((x, text, rgb))
        x += w + gap
    lines.append(line)
    row_h = LEGEND_FONT_PX + 8
    strip = Image.new("RGB", (width, pad * 2 + row_h * len(lines)), "white")
    draw = ImageDraw.Draw(strip)
    for r, line in enumerate(lines):
        y = pad + r * row_h
        for x, text, rgb in line:
            if rgb is not None:
                draw.rectangle((x, y + 2, x + swatch, y + 2 + swatch), fill=tuple(int(c) for c in rgb), outline="gray")
                x += swatch + 5
            draw.text((x, y), text, fill="black", font=face)
    top = np.full((image.shape[0], width, 3), 255, dtype=np.uint8)
    top[:, : image.shape[1]] = image
    return np.concatenate([top, np.asarray(strip)], axis=0)

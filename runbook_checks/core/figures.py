"""The figures the kit draws (benchmarks, reports) and the blocks of the docs pages they
are published in."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import files
from .errors import KitError


def pyplot():
    """matplotlib's pyplot, drawing to files (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, dest: Path, caption: str) -> Path:
    """The caption at the figure's foot, then the PNG at `dest`; the figure is closed."""
    try:
        fig.text(0.01, 0.01, caption, fontsize=7, color="#555555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(dest)
    finally:
        pyplot().close(fig)
    return dest


def publish(page: Path, marker: str, png: Path, image: str, caption: str, body: str,
            error: type[KitError] = KitError) -> None:
    """The page's block between `<!-- MARKER -->` and `<!-- /MARKER -->` replaced with the
    plot (copied to img/IMAGE beside the page), its caption and `body` (markdown)."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    text = page.read_text()
    if start not in text or end not in text:
        raise error(f"{page} has no {start} ... {end} block", "add the two markers to the page")
    target = page.parent / "img" / image
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(png, target)
    head, rest = text.split(start, 1)
    block = f"{start}\n\n![{caption}](img/{image})\n\n*{caption}*\n\n{body}\n\n{end}"
    files.atomic_write(page, head + block + rest.split(end, 1)[1])

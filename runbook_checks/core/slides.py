"""Slides for a classroom session: a recorded run (docs/recorded, real outputs, sanitised)
as a reveal.js deck, one slide per cell, with nbconvert's slides exporter. reveal.js
comes from the npm registry once per version into the kit's cache, and the deck loads
nothing from anywhere else (the site works offline)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import files
from .errors import KitError
from .paths import cache_dir

REVEAL_VERSION = "5.2.1"
# what a deck needs of the package: the script, its style, one theme and that theme's fonts
REVEAL_PARTS = ("dist/reveal.js", "dist/reveal.css", "dist/theme/white.css", "dist/theme/fonts/source-sans-pro/")
TEMPLATES = Path(__file__).parent / "templates"
PREFIX = "reveal.js"  # where a deck finds reveal.js, relative to itself


def reveal_js(version: str = REVEAL_VERSION) -> Path:
    """reveal.js's files (REVEAL_PARTS) in the kit's cache, fetched with `npm pack` the
    first time: the directory."""
    dest = cache_dir() / "reveal.js" / version
    if (dest / "dist" / "reveal.js").is_file():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise KitError("the slides need reveal.js from the npm registry, and npm is not on PATH",
                       "install Node.js and npm (./kit setup does), then build the site again")
    with tempfile.TemporaryDirectory(prefix="kit-reveal-") as tmp:
        proc = subprocess.run([npm, "pack", f"reveal.js@{version}", "--silent", "--pack-destination", tmp],
                              capture_output=True, text=True, timeout=300)
        archives = list(Path(tmp).glob("reveal.js-*.tgz"))
        if proc.returncode or not archives:
            raise KitError(f"npm pack reveal.js@{version} failed: {(proc.stderr or proc.stdout).strip()[-500:]}",
                           "check that the npm registry is reachable (npm ping)")
        staging = Path(tmp) / "reveal.js"
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and any(
                m.name.removeprefix("package/").startswith(part) for part in REVEAL_PARTS)]
            for member in members:
                member.name = member.name.removeprefix("package/")
            tar.extractall(staging, members=members, filter="data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest


def assets(version: str = REVEAL_VERSION) -> dict[str, Path]:
    """{path under the deck's directory: file} of what a deck loads."""
    root = reveal_js(version)
    return {f"{PREFIX}/{p.relative_to(root)}": p for p in sorted(root.rglob("*")) if p.is_file()}


def deck(notebook: Path) -> str:
    """The notebook as one reveal.js page: each cell a slide (the parameters cell left
    out: the injected parameters show what the run used). Kept in the kit's cache by
    what it is made of (the notebook, the template, nbconvert's version), so a site build
    converts only what changed."""
    import hashlib

    import nbconvert

    made_of = hashlib.sha256(notebook.read_bytes())
    for part in sorted(TEMPLATES.rglob("*")):
        made_of.update(part.read_bytes() if part.is_file() else b"")
    made_of.update(f"{nbconvert.__version__} {REVEAL_VERSION}".encode())
    cached = cache_dir() / "slides" / f"{notebook.stem}-{made_of.hexdigest()[:16]}.html"
    if cached.is_file():
        return cached.read_text()
    html = _convert(notebook)
    files.atomic_write(cached, html)
    return html


def _convert(notebook: Path) -> str:
    import nbformat
    from nbconvert import SlidesExporter

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        skip = "parameters" in cell.metadata.get("tags", [])
        cell.metadata["slideshow"] = {"slide_type": "skip" if skip else "slide"}
    exporter = SlidesExporter(template_name="kit-slides", extra_template_basedirs=[str(TEMPLATES)],
                              reveal_url_prefix=PREFIX, reveal_theme="white", exclude_input_prompt=True,
                              exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    return html

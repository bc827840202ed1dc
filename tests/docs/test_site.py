"""The documentation site: `mkdocs build --strict` passes, the generated tables are in
the built pages, internal links resolve, and the built site opens in headless Chromium.

The build renders the runbook notebooks without executing them, so these tests need no
daemon and take seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runbook_checks.core import paths, profiles, runner  # noqa: E402


# --------------------------------------------------------------------------------------
# reading built HTML
# --------------------------------------------------------------------------------------
class PageParser(HTMLParser):
    """Tables (as rows of cell text), hrefs, element ids and the <title> of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.title = ""
        self._cell: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def table_row(page: PageParser, first_cell: str) -> tuple[list[str], list[str]]:
    """(header row, row) of the first table row whose first cell is `first_cell`."""
    for table in page.tables:
        for row in table[1:]:
            if row and row[0] == first_cell:
                return table[0], row
    raise AssertionError(f"no table row starts with a cell {first_cell!r}")


# --------------------------------------------------------------------------------------
# the build
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_strict_build_succeeds(site):
    assert (site / "index.html").is_file()
    assert (site / "sitemap.xml").is_file()


@pytest.mark.parametrize("runbook", profiles.list_runbooks())
def test_runbook_page_has_generated_parameter_table(site, runbook):
    page = site / "runbooks" / runbook / "index.html"
    assert page.is_file(), f"no page for runbook {runbook}"
    parsed = parse(page)
    declared = runner.describe()[runbook]
    for name, spec in declared.items():
        header, row = table_row(parsed, name)
        assert header[:3] == ["parameter", "type", "default"]
        assert row[1] == spec["type"], f"{runbook}.{name}: type {row[1]!r} != {spec['type']!r}"
        assert len(row) == len(header), f"{runbook}.{name}: a '|' in the help split the row: {row}"


def test_install_page_lists_buildkit_version(site):
    parsed = parse(site / "runbooks" / "install" / "index.html")
    _, row = table_row(parsed, "buildkit_version")
    assert "pinned version" in row[-1]
    _, row = table_row(parsed, "profile")
    assert "lab | ci | production" in row[-1]


@pytest.mark.parametrize("runbook", profiles.list_runbooks())
def test_notebook_is_rendered_not_executed(site, runbook):
    source = profiles.runbook_path(runbook)
    page = site / "notebooks" / source.stem / "index.html"
    assert page.is_file(), f"{source.name} was not rendered"
    html = page.read_text(encoding="utf-8")
    assert "jp-Notebook" in html and "mode: str" in html  # the parameters cell, as code
    assert "application/vnd.buildkit-ops.report+json" not in html  # no outputs: never executed


def _profile_value(profile: str, key: str, runbook: str = "configure"):
    data = yaml.safe_load((paths.PROFILES_DIR / f"{profile}.yaml").read_text()) or {}
    if key in data:
        return data[key]
    return yaml.safe_load(runner.describe()[runbook][key]["default"])


def test_reference_has_max_parallelism_per_profile(site):
    parsed = parse(site / "reference" / "buildkitd-toml" / "index.html")
    header, row = table_row(parsed, "worker.oci.max-parallelism")
    assert header[2:5] == list(profiles.PROFILES)
    for column, profile in enumerate(profiles.PROFILES, start=2):
        assert row[column] == str(_profile_value(profile, "max_parallelism")), (profile, row)
    assert row[5] == "0: no limit"  # BuildKit's own default


def test_reference_shows_each_profiles_toml(site):
    html = (site / "reference" / "buildkitd-toml" / "index.html").read_text(encoding="utf-8")
    for profile in profiles.PROFILES:
        assert f"buildkitd.toml ({profile})" in html


def test_internal_links_and_anchors_resolve(site):
    pages = {p: parse(p) for p in site.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for href in parsed.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            if not parts.path:
                target = page
            elif parts.path.startswith("/"):  # 404.html links from the site root
                target = (site / unquote(parts.path).lstrip("/")).resolve()
            else:
                target = (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {href}")
                continue
            if parts.fragment and target.suffix == ".html" and target in pages:
                if unquote(parts.fragment) not in pages[target].ids:
                    broken.append(f"{page.relative_to(site)}: {href} (no such anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium)")
def test_index_opens_in_headless_chromium(site, tmp_path):
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (site / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = PageParser()
    dom.feed(proc.stdout)
    assert "buildkit-ops" in dom.title, dom.title
    assert "md-header" in proc.stdout  # Material's layout was rendered

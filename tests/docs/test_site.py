"""The documentation site: `mkdocs build --strict` passes, the generated tables are in
the built pages, internal links resolve, and the built site opens in headless Chromium.

The build renders the runbook notebooks without executing them, so these tests need no
daemon and take seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import json
import re
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
    """The notebook's page: its recorded run (docs/recorded: a real run's outputs, with no
    machine path left), or, without one, the notebook as in git (no outputs); never
    executed by the build."""
    from runbook_checks.core import recorded

    source = profiles.runbook_path(runbook)
    page = site / "notebooks" / source.stem / "index.html"
    assert page.is_file(), f"{source.name} was not rendered"
    html = page.read_text(encoding="utf-8")
    assert "jp-Notebook" in html and "mode: str" in html  # the parameters cell, as code
    if recorded.recorded(runbook):
        assert "jp-OutputArea" in html, f"{runbook}: the recorded run's outputs are not on its page"
        assert str(ROOT) not in html and str(Path.home()) + "/" not in html, f"{runbook}: a machine path on the page"
    else:
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


EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)=["'](?:https?:)?//""", re.I)


def test_no_page_loads_a_script_style_font_or_image_from_outside(site):
    """The site is read on air-gapped build hosts: every script, stylesheet, font and
    image a page loads is in the site itself (links to elsewhere are fine)."""
    found = [f"{p.relative_to(site)}: {m.group(0)}" for p in site.rglob("*.html")
             for m in EXTERNAL.finditer(p.read_text(encoding="utf-8"))]
    found += [f"{p.relative_to(site)}: {m.group(0)}" for p in site.rglob("*.css")
              for m in re.finditer(r"@import\s+url\(\s*[\"']?https?:|url\(\s*[\"']?https?://[^)]*\)", p.read_text())]
    assert not found, "\n".join(found[:20])


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, and see every
    request the page itself makes (the browser's own update and sign-in pings are not the
    page's). Every request goes to a proxy that answers nothing, so the network is off."""

    def __init__(self, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--proxy-server=http://127.0.0.1:9",
             "--proxy-bypass-list=<-loopback>", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"], stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
                break
        self.ws = websocket.create_connection(url, timeout=30)
        self.ids = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Network.enable", session=True)
        self.call("Page.enable", session=True)

    def call(self, method, session=False, **params):
        self.ids += 1
        message = {"id": self.ids, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv())
            if answer.get("id") == self.ids:
                assert "error" not in answer, answer
                return answer.get("result", {})
            self.events.append(answer)

    events: list = []

    def open(self, url: str, settle: float = 2.0) -> list[str]:
        """Load `url`; the URLs of the requests the page made (not file:, data:, about:)."""
        import time

        self.events = []
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        loaded = None
        self.ws.settimeout(0.5)
        while time.monotonic() < deadline and (loaded is None or time.monotonic() < loaded + settle):
            try:
                event = json.loads(self.ws.recv())
            except Exception:
                continue
            self.events.append(event)
            if event.get("method") == "Page.loadEventFired" and loaded is None:
                loaded = time.monotonic()
        self.ws.settimeout(30)
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"
                and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:", "blob:"))]

    def count(self, selector: str) -> int:
        result = self.call("Runtime.evaluate", session=True, returnByValue=True,
                           expression=f"document.querySelectorAll({json.dumps(selector)}).length")
        return result["result"]["value"]

    def close(self):
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium)")
def test_pages_render_with_the_network_off(site, tmp_path):
    """Each kind of page renders with the network off and asks for nothing outside the
    site; the diagrams are there as SVG (inline, or the generated files), none left for
    a script to draw."""
    browser = Browser(tmp_path / "profile")
    try:
        for page, selector, least in (("get-started/index.html", ".kit-diagram svg", 1),
                                      ("runbooks/index.html", ".kit-diagram svg", 1),
                                      ("runbooks/alerting/index.html", ".kit-diagram svg", 1),
                                      ("reference/architecture/index.html", "img[src$='.svg']", 2),
                                      ("notebooks/02-configure/index.html", ".jp-Notebook", 1),
                                      ("training/labs/04-not-cached/index.html", "details.tip", 3),
                                      # a classroom deck: reveal.js loaded from beside it and started
                                      ("training/slides/03-verify.html", ".reveal.ready .slides section", 5),
                                      ("index.html", ".md-header", 1)):
            asked = browser.open((site / page).as_uri())
            assert not asked, f"{page} asked the network for {asked}"
            assert browser.count(selector) >= least, f"{page}: fewer than {least} {selector}"
            assert browser.count(".mermaid") == 0, page
    finally:
        browser.close()


def test_every_lab_has_a_page_with_hints_and_solution_folded(site):
    """Each lab's task.md is a page in the Training section: every hint folded on its own,
    the solution folded, how to start and check it on top; the training page lists each."""
    from runbook_checks.labs import catalogue

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))["nav"]
    training = next(item["Training"] for item in nav if isinstance(item, dict) and "Training" in item)
    listed = {page for entry in training if isinstance(entry, dict) for group in entry.values()
              for item in group for page in item.values()}
    index = (site / "training/index.html").read_text()
    for lab in catalogue.all_labs():
        assert f"training/labs/{lab.folder.name}.md" in listed, f"{lab.name} is not in the nav's Training section"
        html = (site / "training/labs" / lab.folder.name / "index.html").read_text()
        assert html.count('<details class="tip"') == len(lab.hints), lab.name
        assert '<details class="success"' in html and "lab.check" in html, lab.name
        assert f'href="labs/{lab.folder.name}/"' in index, f"{lab.name} is not in the training page's table"


def test_every_recorded_run_has_a_deck_listed_on_the_training_page(site):
    """One reveal.js deck per recorded run, a slide per cell (the parameters cell left
    out), linked from the training page; reveal.js is in the site beside the decks."""
    import nbformat

    from runbook_checks.core import recorded, runner

    index = (site / "training/index.html").read_text()
    decks = 0
    for name in runner.describe():
        found = recorded.recorded(name)
        if found is None:
            continue
        decks += 1
        notebook = found[0]
        html = (site / "training/slides" / f"{notebook.stem}.html").read_text()
        cells = [c for c in nbformat.read(notebook, as_version=4).cells
                 if "parameters" not in c.metadata.get("tags", [])]
        assert html.count('<section') == 2 * len(cells), notebook.stem  # nbconvert: a slide, its one subslide
        assert f'href="slides/{notebook.stem}.html"' in index, notebook.stem
        assert "Outcome(" not in html, notebook.stem  # a step's line, not its repr
    assert decks >= 10
    assert (site / "training/slides/reveal.js/dist/reveal.js").is_file()

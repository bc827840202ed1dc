"""MkDocs hook: pictures of the kit drawn from the kit, at build time, with Graphviz.

  <!-- diagram:packages -->      runbook_checks' packages in their layers (pyproject.toml's
                                import-linter contract), with every import between them
                                as grimp finds it in the code
  <!-- diagram:runbook-flow -->  how `invoke runbook configure` runs, from the command to
                                the run record, naming the real functions and steps
  ```dot ... ```                any Graphviz source in a page, drawn in place

Each marker becomes an image; the SVG is a generated file of the site (nothing is
written into docs/); a ```dot block becomes the SVG itself, inline. Nothing is loaded
from the internet when a page is viewed (the site serves air-gapped build hosts). A
marker the hook does not know, or a dot source Graphviz refuses, fails the build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MARKER = re.compile(r"<!--\s*diagram:([a-z-]+)\s*-->")
DOT_FENCE = re.compile(r"^(?P<indent>[ \t]*)```dot[^\n]*\n(?P<source>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
FOLDER = "reference/img"
ALT = {"packages": "runbook_checks' packages in their layers, and the imports between them",
       "runbook-flow": "how invoke runbook runs a runbook, from the command to the run record"}
FONT = 'fontname="Helvetica,Arial,sans-serif"'


def layers(root: Path) -> list[list[str]]:
    """The layers contract of pyproject.toml, top first: [["session"], ["cache", ...], ...]."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in re.split(r"[|:]", layer)] for layer in contract["layers"]]


def package_graph(root: Path) -> str:
    """Graphviz source: one box per package (or top module) with its module and line
    counts, rows by layer, an arrow per package pair that imports, labelled with how
    many module-to-module imports it carries (grimp, as import-linter sees them)."""
    import grimp

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    graph = grimp.build_graph("runbook_checks")
    rows = layers(root)
    names = [n for row in rows for n in row]
    members = {n: {m for m in graph.modules if m == f"runbook_checks.{n}" or m.startswith(f"runbook_checks.{n}.")}
               for n in names}
    package = root / "runbook_checks"
    lines = ["digraph packages {", f"  graph [rankdir=TB, nodesep=0.5, ranksep=0.7, {FONT}];",
             f'  node [shape=box, style="rounded,filled", fillcolor="#eef1fb", color="#3f51b5", {FONT}];',
             f'  edge [color="#5c6bc0", {FONT}, fontsize=10];']
    for i, row in enumerate(rows):
        lines.append("  { rank=same; " + " ".join(f'"{n}";' for n in row) + " }")
        for n in row:
            path = package / n
            files = sorted(path.rglob("*.py")) if path.is_dir() else [package / f"{n}.py"]
            loc = sum(f.read_text().count("\n") for f in files)
            count = len([f for f in files if f.name != "__init__.py"])
            lines.append(f'  "{n}" [label=<<b>{n}</b><br/><font point-size="10">{count} module{"s" if count != 1 else ""},'
                         f' {loc} lines</font>>];')
    for a in names:
        for b in names:
            pairs = sum(1 for m in members[a] for imported in graph.find_modules_directly_imported_by(m)
                        if imported in members[b]) if a != b else 0
            if pairs:
                lines.append(f'  "{a}" -> "{b}" [label="{pairs}"];')
    lines.append("}")
    return "\n".join(lines)


def runbook_flow(root: Path) -> str:
    """Graphviz source of one runbook call, with the configure runbook's real step names."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import nbformat

    from runbook_checks.core import profiles

    notebook = profiles.runbook_path("configure")
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    steps = [m.group(1) for c in cells for m in re.finditer(r"""report\.step\(\s*["'](.+?)["']""", c)]
    step_rows = "".join(f'<tr><td align="left">report.step("{s}", ...)</td></tr>' for s in steps)
    return "\n".join([
        "digraph flow {",
        f"  graph [rankdir=TB, nodesep=0.35, ranksep=0.35, {FONT}];",
        f'  node [shape=box, style="rounded,filled", fillcolor="#eef1fb", color="#3f51b5", {FONT}, fontsize=11];',
        f'  edge [color="#5c6bc0", {FONT}, fontsize=9];',
        '  cmd [label=<<b>invoke runbook configure</b><br/>--profile lab --mode apply<br/>--set k=v>,'
        ' fillcolor="#fff8e1", color="#f9a825"];',
        '  runner [label=<<b>core.runner.run</b><br/>core.profiles.resolve:<br/>defaults &lt; profile &lt; --set,'
        '<br/>validated (exit 2 if refused)>];',
        f'  notebook [label=<<b>papermill</b><br/>executes {notebook.relative_to(root)}>];',
        '  session [label=<<b>session.start</b><br/>(the second cell) builds params,<br/>layout, report, manager, programs>];',
        f'  steps [shape=plain, fillcolor=none, label=<<table border="1" cellborder="0" cellspacing="2"'
        f' bgcolor="#eef1fb" color="#3f51b5" style="rounded"><tr><td><b>one cell per step</b></td></tr>'
        f'{step_rows}</table>>];',
        '  domain [label=<<b>a domain function</b><br/>daemon, cache, monitoring, plugins:<br/>'
        'returns an Outcome<br/>(ok, changed, failed, skipped; diff; facts)>];',
        '  report [label=<<b>core.results.Report</b><br/>a failed step stops the runbook;<br/>'
        'report.finish() emits it>];',
        '  record [label=<<b>runs/configure/&lt;stamp&gt;</b><br/>.ipynb and .json,<br/>the recap printed>,'
        ' fillcolor="#e8f5e9", color="#2e7d32"];',
        "  { rank=same; cmd; runner; notebook; }",
        "  { rank=same; session; steps; domain; }",
        "  { rank=same; report; record; }",
        "  cmd -> runner -> notebook;",
        "  notebook -> session;",
        "  session -> steps;",
        '  steps -> domain [label="calls"];',
        '  domain -> report [label="Outcome"];',
        '  report -> record [label="read back"];',
        "}",
    ])


SOURCES = {"packages": package_graph, "runbook-flow": runbook_flow}


def render(dot_source: str) -> str:
    dot = shutil.which("dot")
    if not dot:
        raise PluginError("Graphviz is not installed, so the diagrams cannot be drawn: apt-get install graphviz"
                          " (./kit setup installs it)")
    proc = subprocess.run([dot, "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise PluginError(f"dot refused a diagram: {proc.stderr.strip()}")
    return proc.stdout


def on_files(files: Files, config, **kwargs) -> Files:
    root = Path(config.config_file_path).resolve().parent
    for name, source in SOURCES.items():
        files.append(File.generated(config, f"{FOLDER}/{name}.svg", content=render(source(root))))
    return files


def inline_svg(dot_source: str, indent: str) -> str:
    """A dot source drawn as an inline <svg> block (no XML prologue), at `indent`."""
    svg = render(dot_source)
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg style="max-width: 100%; height: auto"', svg, count=1)
    body = "\n".join(indent + line for line in svg.splitlines() if line.strip())
    return f'{indent}<div class="kit-diagram" markdown="0">\n{body}\n{indent}</div>'


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    depth = page.file.src_uri.count("/")
    markdown = DOT_FENCE.sub(lambda m: inline_svg(m.group("source"), m.group("indent")), markdown)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in SOURCES:
            raise PluginError(f"{page.file.src_uri}: unknown marker <!-- diagram:{name} -->; known: {', '.join(SOURCES)}")
        return f"![{ALT[name]}]({'../' * depth}{FOLDER}/{name}.svg)"

    return MARKER.sub(replace, markdown)

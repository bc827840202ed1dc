"""`invoke docs.build`, `docs.serve`: the site."""

from __future__ import annotations

import sys

from invoke import task


@task(help={"strict": "fail on warnings (default true)"})
def build(c, strict=True):
    """Build the MkDocs Material site into site/ (notebooks rendered, never executed)."""
    c.run(f"{sys.executable} -m mkdocs build {'--strict' if strict else ''}", pty=False)


@task
def serve(c):
    """Serve the site on 127.0.0.1:8000 with live reload."""
    c.run(f"{sys.executable} -m mkdocs serve -a 127.0.0.1:8000", pty=False)

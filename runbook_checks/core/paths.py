"""Where the checkout is and where run records go: the kit's fixed paths."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS / "profiles"
WORKLOADS_DIR = PROJECT_ROOT / "workloads"
LABS_DIR = PROJECT_ROOT / "labs"


def in_checkout(path: str | Path) -> Path:
    """A path as given: absolute, or relative to the checkout (an operator's file kept
    with it, like docs/examples/deny-list.yaml; a rehearsal host sees the checkout at the
    same path)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def runs_dir() -> Path:
    """Where run records go: $BUILDKIT_OPS_RUNS_DIR, else runs/ in the checkout."""
    return Path(os.environ.get("BUILDKIT_OPS_RUNS_DIR") or PROJECT_ROOT / "runs")


def cache_dir() -> Path:
    """What the kit builds once and keeps across checkouts (BuildKit binaries by version, the
    rehearsal hosts' root filesystems): $BUILDKIT_OPS_CACHE, else ~/.cache/buildkit-ops."""
    return Path(os.environ.get("BUILDKIT_OPS_CACHE") or Path.home() / ".cache" / "buildkit-ops")


def labs_home() -> Path:
    """Where a trainee's practice labs live (each lab's sandbox builder, its workspace, and
    the progress record): $BUILDKIT_OPS_LABS_DIR, else ~/.local/state/buildkit-ops/labs."""
    return Path(os.environ.get("BUILDKIT_OPS_LABS_DIR") or Path.home() / ".local/state/buildkit-ops/labs")

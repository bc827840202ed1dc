"""The labs under labs/: each folder `NN-name` holds task.md (the task, why it matters,
what done looks like, the hints, the solution) and lab.py (AREA, and setup, check, solve,
wrong_fix, each given the lab's sandbox). One source for the trainee's terminal, the
site's page and the tests."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..core.errors import LabError
from ..core.paths import LABS_DIR

# the operators' task list (../shared/seed): its ten areas
AREAS = {1: "installation", 2: "cache optimisation", 3: "production builder", 4: "plugin management",
         5: "performance monitoring", 6: "resource management", 7: "testing and validation",
         8: "documentation", 9: "training and handover", 10: "post-implementation"}
SECTIONS = ("Task", "Why it matters", "Done when", "Hints", "Solution")
VERBS = ("setup", "check", "solve", "wrong_fix")


@dataclass(frozen=True)
class Finding:
    """One thing a check looked at on the real system: whether it holds, and what it saw."""

    ok: bool
    said: str


def expect(ok: bool, proven: str, wrong: str) -> Finding:
    """A finding that says `proven` when `ok`, else what is still wrong."""
    return Finding(bool(ok), proven if ok else wrong)


@dataclass(frozen=True)
class Lab:
    folder: Path

    @property
    def name(self) -> str:
        return re.sub(r"^\d\d-", "", self.folder.name)

    @property
    def number(self) -> int:
        return int(self.folder.name[:2])

    @cached_property
    def text(self) -> str:
        return (self.folder / "task.md").read_text()

    @property
    def title(self) -> str:
        return self.text.splitlines()[0].lstrip("# ").strip()

    @cached_property
    def sections(self) -> dict[str, str]:
        """task.md's `## ` sections by heading."""
        parts = re.split(r"^## +(.+?)\s*$", self.text, flags=re.M)
        return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}

    @property
    def hints(self) -> list[str]:
        """The hints, first to last (the `### ` parts of the Hints section)."""
        return [h.split("\n", 1)[1].strip() if "\n" in h else "" for h in
                re.split(r"^(?=### )", self.sections.get("Hints", ""), flags=re.M) if h.startswith("### ")]

    @cached_property
    def module(self) -> ModuleType:
        name = f"kit_labs.{self.name.replace('-', '_')}"
        spec = importlib.util.spec_from_file_location(name, self.folder / "lab.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    @property
    def area(self) -> int:
        return self.module.AREA

    @property
    def area_name(self) -> str:
        return f"§{self.area} {AREAS[self.area]}"

    def verb(self, name: str) -> Callable:
        return getattr(self.module, name)


def problems(lab: Lab) -> list[str]:
    """What is missing from a lab's folder (the tests hold every lab to it)."""
    found = []
    if not (lab.folder / "task.md").is_file() or not (lab.folder / "lab.py").is_file():
        return [f"{lab.folder.name}: needs task.md and lab.py"]
    found += [f"{lab.folder.name}/task.md: no '## {s}' section" for s in SECTIONS if s not in lab.sections]
    if not lab.hints:
        found.append(f"{lab.folder.name}/task.md: no '### ' hint under '## Hints'")
    found += [f"{lab.folder.name}/lab.py: no {v}()" for v in VERBS if not callable(getattr(lab.module, v, None))]
    if not isinstance(getattr(lab.module, "START_SECONDS", None), int):
        found.append(f"{lab.folder.name}/lab.py: no START_SECONDS (lab.start's time, measured; the page shows it)")
    if getattr(lab.module, "AREA", None) not in AREAS:
        found.append(f"{lab.folder.name}/lab.py: AREA must be one of the seed's areas {sorted(AREAS)}")
    return found


def all_labs(root: Path = LABS_DIR) -> list[Lab]:
    return [Lab(p) for p in sorted(root.glob("[0-9][0-9]-*")) if p.is_dir()]


def find(name: str) -> Lab:
    labs = all_labs()
    for lab in labs:
        if name in (lab.name, lab.folder.name):
            return lab
    raise LabError(f"no lab named {name!r}", f"choose one of: {', '.join(lab.name for lab in labs)} (invoke lab.list)")

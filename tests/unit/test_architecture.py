"""The package's shape holds: the import-linter contracts pass (and fail on a forbidden
import), every exception class is defined in core.errors and carries a fix, no cache
backend kind is dispatched on outside cache.backends, and no module grows past 500 lines."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import runbook_checks
from runbook_checks.core import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "runbook_checks"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(runbook_checks.__path__, "runbook_checks."))


def sources() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts (pyproject.toml), on the package under `root`."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def test_the_import_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("importer,imported", [
    ("core/layout.py", "runbook_checks.daemon.service"),       # core imports nothing above it
    ("daemon/verify.py", "runbook_checks.cache.images"),       # daemon imports core only
    ("cache/prune.py", "runbook_checks.monitoring.prometheus"),  # domains never import each other
    ("monitoring/exporter.py", "runbook_checks.plugins.audit"),
    ("plugins/buildx.py", "runbook_checks.cache.registry"),
    ("daemon/stack.py", "runbook_checks.session"),             # nothing imports the top
])
def test_a_forbidden_import_breaks_the_contract(tmp_path, importer, imported):
    """The same check on a copy of the package with one forbidden import added, inside
    a function (those count too): it fails and names the import."""
    copy = tmp_path / "runbook_checks"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / importer, "a") as fh:
        fh.write(f"\n\ndef _forbidden():\n    import {imported}  # noqa\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "BROKEN" in proc.stdout
    assert f"runbook_checks.{importer[:-3].replace('/', '.')} -> {imported}" in proc.stdout, proc.stdout


def test_every_exception_class_is_defined_in_core_errors():
    defined_elsewhere = []
    for name in modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name and name != "runbook_checks.core.errors":
                defined_elsewhere.append(f"{name}.{cls.__name__}")
    assert not defined_elsewhere, f"exception classes outside core.errors: {defined_elsewhere}"
    kit_errors = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.KitError)]
    assert len(kit_errors) >= 18
    for cls in kit_errors:
        assert cls.__doc__, f"{cls.__name__} says nothing about when it is raised"


def test_a_kit_error_cannot_be_raised_without_a_fix():
    with pytest.raises(TypeError):
        errors.KitError("something is wrong")  # type: ignore[call-arg]
    error = errors.CacheError("the cache is gone", "export it again")
    assert (error.problem, error.fix) == ("the cache is gone", "export it again")
    assert str(error) == "the cache is gone\n  fix: export it again"


def test_every_raise_site_gives_the_problem_and_the_fix():
    """Static: a call of a kit error class with fewer than two arguments would only fail
    when it is raised, perhaps on a branch no test reaches."""
    names = {n for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.KitError)}
    short = []
    for path, text in sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                given = len(node.args) + sum(k.arg in ("problem", "fix") for k in node.keywords)
                if name in names and given < 2:
                    short.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not short, short


KINDS = r"""["'](registry|inline|s3|local)["']"""
KIND_DISPATCH = re.compile(rf"\bkind\b\s*(==|!=|(not\s+)?in\b)[^#\n]*{KINDS}|{KINDS}\s*(==|!=|in\b)[^#\n]*\bkind\b")


def test_no_dispatch_on_a_cache_backend_kind_outside_the_backends_module():
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for path, text in sources().items() if path != PACKAGE / "cache/backends.py"
             for i, line in enumerate(text.splitlines(), 1) if KIND_DISPATCH.search(line)]
    assert not found, "\n".join(found)
    # the pattern finds what it is for, and not a plugin entry's kind
    assert KIND_DISPATCH.search('if backend.kind == "registry":')
    assert KIND_DISPATCH.search('elif kind in ("local", "s3"):')
    assert not KIND_DISPATCH.search('if entry.kind == "symlink":')


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(ROOT)): text.count("\n") for p, text in sources().items() if text.count("\n") > 500}
    assert not long, long


def test_every_module_says_what_it_is_for():
    missing = [str(p.relative_to(ROOT)) for p, text in sources().items() if not ast.get_docstring(ast.parse(text))]
    assert not missing, missing

"""Every shell sample in the docs and the README that calls `invoke` or `./kit` is checked
against the kit itself: invoke's own parser on the real task collection (task names,
options, their types), the runbook names, profile names and --set names, and for a
runbook with concrete values the whole resolution `invoke runbook` would do. A sample
shown failing (`$ invoke ...` followed by `error: ...`) must fail, with the message the
docs show. Module and file references (`runbook_checks.x.y`, `runbook_checks/x/y.py`)
must resolve. No daemon is needed: seconds."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import tasks  # noqa: E402
from invoke import Program  # noqa: E402
from invoke.exceptions import ParseError  # noqa: E402
from invoke.parser import Parser  # noqa: E402

from runbook_checks.core import profiles  # noqa: E402
from runbook_checks.core.errors import KitError  # noqa: E402
from runbook_checks.daemon.stack import UP_SEQUENCE  # noqa: E402

PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
RUNBOOKS = profiles.list_runbooks()
KIT_COMMANDS = re.findall(r"^\s+([a-z]+)\)", (ROOT / "kit").read_text(), flags=re.M)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.]*$|^(key|k|KEY)=|=v?[A-Z][A-Z0-9_.:/]*$|\.\.\.")


@dataclass
class Sample:
    page: Path
    line: int
    text: str
    inline: bool = False  # from `code` in prose or a table, not a code block
    error: list[str] | None = None  # the `error:` and `fix:` lines a transcript shows after it

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text}"


def samples(page: Path) -> list[Sample]:
    """`invoke ...` and `./kit ...` in code blocks (a `$ ` prompt and `\\` continuations
    allowed) and in inline code."""
    found: list[Sample] = []
    lines = page.read_text().splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        elif fenced:
            command = re.sub(r"^\$\s+", "", stripped)
            if re.match(r"(invoke|\./kit)\b", command):
                start = i
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + " " + lines[i].strip()
                follow = [ln.strip() for ln in lines[i + 1:i + 3]]
                error = follow if stripped.startswith("$") and follow and follow[0].startswith("error:") else None
                found.append(Sample(page, start + 1, command, error=error))
        else:
            for match in re.finditer(r"`((?:invoke|\./kit)\b[^`]*)`", line):
                found.append(Sample(page, i + 1, match.group(1).replace("\\|", "|"), inline=True))
        i += 1
    return found


ALL = [s for page in PAGES for s in samples(page)]


def variants(argv: list[str]) -> list[list[str]]:
    """A token `a|b|c` stands for each of its alternatives: one argv per alternative."""
    out = [argv]
    for i, token in enumerate(argv):
        if "|" in token:
            out = [v[:i] + [alt] + v[i + 1:] for v in out for alt in token.split("|")]
    return out


def parse(argv: list[str]):
    """invoke's own parser on the kit's task collection; [(task name, {arg: value})]."""
    program = Program(namespace=tasks.ns)
    parser = Parser(initial=program.initial_context, contexts=tasks.ns.to_contexts())
    return [(c.name, {k: a.value for k, a in c.args.items() if a.got_value}) for c in parser.parse_argv(argv)]


def runbooks_behind(task: str, args: dict) -> list[str]:
    """The runbooks whose parameters a task's --set may name."""
    if task == "runbook":
        return [args.get("name", "")]
    if task == "up":
        return [name for name, _ in UP_SEQUENCE]
    leaf = task.rsplit(".", 1)[-1]
    return [leaf] if leaf in RUNBOOKS else []


def problems(argv: list[str], inline: bool) -> list[str]:
    """What is wrong with one invoke command line (its argv after `invoke`)."""
    if argv[:1] in (["--list"], ["-l"]):
        return []
    if argv[:1] in (["--help"], ["-h"]):
        return [] if len(argv) == 1 or argv[1] in tasks.ns.task_names else [f"no task {argv[1]!r}"]
    try:
        parsed = parse(argv)
    except ParseError as exc:
        if inline and len(argv) == 1 and "positional" in str(exc):
            return []  # `invoke runbook` in prose names the task
        return [f"invoke refuses it: {exc}"]
    found = []
    for task, args in parsed[1:]:
        name = args.get("name") or (args["list"] if isinstance(args.get("list"), str) else "")
        listing = "list" in args and not name
        if task == "runbook" and not listing and name not in RUNBOOKS + list(tasks.LIST_WORDS) \
                and not PLACEHOLDER.match(name):
            found.append(f"no runbook {name!r} (runbooks: {', '.join(RUNBOOKS)})")
        profile = args.get("profile", "")
        if profile and profile not in profiles.PROFILES and not PLACEHOLDER.match(profile):
            if "/" not in profile and not profile.endswith((".yaml", ".yml")):
                found.append(f"no profile {profile!r}")
            elif not (ROOT / profile).is_file():
                found.append(f"the site profile {profile} is not a file of the checkout (a sample must run as written)")
        if args.get("mode", "check") not in ("check", "apply") and not PLACEHOLDER.match(args["mode"]):
            found.append(f"no mode {args['mode']!r}")
        behind = [r for r in runbooks_behind(task, args) if r in RUNBOOKS]
        declared = set().union(*(profiles.declared_parameters(profiles.runbook_path(r)) for r in behind)) \
            if behind else set().union(*(profiles.declared_parameters(profiles.runbook_path(r)) for r in RUNBOOKS))
        for item in args.get("set", []) or []:
            key = item.split("=", 1)[0]
            if not PLACEHOLDER.search(item) and key not in declared:
                found.append(f"--set {key}: no such parameter of {', '.join(behind) or 'any runbook'}")
    return found


def resolution(argv: list[str]) -> tuple[list[str], dict] | None:
    """(sets, args) of an `invoke runbook NAME` line with concrete values, else None."""
    try:
        parsed = parse(argv)
    except ParseError:
        return None
    task, args = parsed[-1]
    if task != "runbook" or args.get("name") not in RUNBOOKS:
        return None
    values = [args.get("profile", "lab"), args.get("mode", "check"), *(args.get("set") or [])]
    if any(PLACEHOLDER.search(v) for v in values):
        return None
    return list(args.get("set") or []), args


def argv_of(sample: Sample) -> list[str]:
    """The command's words without the program: `[--flag value]` (optional) counts as
    written, `...` (more of the same) is dropped."""
    words = shlex.split(sample.text.replace("'", "\\'") if sample.inline else sample.text, comments=True)
    return [w.strip("[]") for w in words[1:] if w != "..."]


@pytest.mark.parametrize("sample", [s for s in ALL if s.text.startswith("invoke")], ids=lambda s: s.where)
def test_invoke_sample_matches_the_tasks_and_the_runbooks(sample):
    argv = argv_of(sample)
    found = [f"{' '.join(v)}: {p}" for v in variants(argv) for p in problems(v, sample.inline)]
    if sample.error is None:
        assert not found, f"{sample.where}\n  " + "\n  ".join(found)
        for v in variants(argv):
            resolved = resolution(v) if not found else None
            if resolved:
                sets, args = resolved
                try:
                    profiles.resolve(args["name"], args.get("profile", "lab"), args.get("mode", "check"), sets)
                except KitError as exc:
                    pytest.fail(f"{sample.where}\n  invoke runbook would refuse it: {exc}")
        return
    # a transcript that shows the kit refusing the command: it is refused, with those words
    if found:
        return
    sets, args = resolution(argv) or pytest.fail(f"{sample.where}: shown failing, but nothing checks why")
    with pytest.raises(KitError) as refused:
        profiles.resolve(args["name"], args.get("profile", "lab"), args.get("mode", "check"), sets)
    said = [f"error: {refused.value.problem}", f"fix: {refused.value.fix}"]
    for shown, real in zip(sample.error, said):
        shown = shown.rstrip(".").rstrip(", ") if shown.endswith("...") else shown
        assert real.startswith(shown), f"{sample.where}\n  the docs show: {shown}\n  the kit says:  {real}"


@pytest.mark.parametrize("sample", [s for s in ALL if s.text.startswith("./kit")], ids=lambda s: s.where)
def test_kit_sample_is_a_kit_command(sample):
    argv = argv_of(sample)
    if sample.inline and not argv:
        return  # `./kit` in prose names the script
    assert argv and argv[0] in KIT_COMMANDS, f"{sample.where}: ./kit takes {', '.join(KIT_COMMANDS)}"


def test_the_samples_were_found():
    """The extraction itself: every runbook is shown with `invoke runbook NAME` somewhere,
    and the README's two commands are there."""
    shown = {argv_of(s)[1] for s in ALL if s.text.startswith("invoke runbook ") and len(argv_of(s)) > 1}
    assert set(RUNBOOKS) - {"plugins-audit"} <= shown, set(RUNBOOKS) - shown
    readme = [s.text for s in ALL if s.page.name == "README.md"]
    assert "./kit up" in " ".join(readme) and "./kit test" in " ".join(readme)
    assert any(s.error for s in ALL)  # transcripts of refusals are recognised


def test_a_wrong_sample_is_caught():
    assert problems(["runbook", "instal"], False)
    assert problems(["runbook", "install", "--set", "paralelism=2"], False)
    assert problems(["runbook", "install", "--profile", "staging"], False)
    assert problems(["docs.bulid"], False)
    assert problems(["runbook", "install", "--modes", "apply"], False)
    assert problems(["up", "--set", "cache_backend=s3"], False)  # no runbook of `invoke up` takes it
    assert not problems(["runbook", "NAME", "--profile", "PROFILE", "--set", "key=value"], False)


REFERENCE = re.compile(r"`(runbook_checks(?:[./][A-Za-z_][A-Za-z0-9_]*)+(?:\.py)?)`")


def references() -> list[tuple[str, str]]:
    return [(f"{p.relative_to(ROOT)}", m.group(1)) for p in PAGES for m in REFERENCE.finditer(p.read_text())]


@pytest.mark.parametrize("page,reference", references())
def test_code_reference_resolves(page, reference):
    """`runbook_checks/x/y.py` is a file; `runbook_checks.x.y.NAME` a module or one of its attributes."""
    if "/" in reference:
        assert (ROOT / reference).exists(), f"{page}: {reference} does not exist"
        return
    parts = reference.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(target, attr), f"{page}: {reference}: {'.'.join(parts[:cut])} has no {attr}"
            target = getattr(target, attr)
        return
    pytest.fail(f"{page}: {reference} is no module")


def test_invoke_help_runbook_names_every_runbook():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "invoke", "--help", "runbook"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(re.sub(r"-\n\s+", "-", proc.stdout).split())  # invoke wraps long help at hyphens
    missing = [name for name in RUNBOOKS if name not in text]
    assert not missing, f"`invoke --help runbook` does not name {missing}:\n{proc.stdout}"
    assert " | ".join(profiles.PROFILES) in text

"""Every lab, for real: start -> check fails with a hint -> solve -> check passes ->
reset -> check fails again -> a plausible wrong fix -> check still fails. Each lab runs
in its own sandbox builder under a labs home of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from runbook_checks.core.errors import LabError
from runbook_checks.labs import catalogue, engine
from runbook_checks.production import hosts

from ..conftest import short_tmpdir

LABS = catalogue.all_labs()


@pytest.fixture
def labs_home(monkeypatch):
    home = short_tmpdir("kl-")
    monkeypatch.setenv("BUILDKIT_OPS_LABS_DIR", str(home))
    yield home
    for lab in LABS:
        engine.stop(lab)
    shutil.rmtree(home, ignore_errors=True)


def test_every_lab_folder_is_whole_and_the_areas_are_covered():
    assert len(LABS) >= 12
    assert [p for lab in LABS for p in catalogue.problems(lab)] == []
    assert len({lab.name for lab in LABS}) == len(LABS)
    assert {lab.area for lab in LABS} >= {1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_a_folder_missing_its_parts_is_named(tmp_path):
    (tmp_path / "01-empty").mkdir()
    assert catalogue.problems(catalogue.Lab(tmp_path / "01-empty")) == ["01-empty: needs task.md and lab.py"]
    half = tmp_path / "02-half"
    half.mkdir()
    (half / "task.md").write_text("# Half a lab\n\n## Task\n\nDo it.\n\n## Hints\n\nnone\n")
    (half / "lab.py").write_text("AREA = 11\n\ndef setup(box):\n    pass\n")
    found = catalogue.problems(catalogue.Lab(half))
    assert "02-half/task.md: no '## Solution' section" in found
    assert "02-half/task.md: no '### ' hint under '## Hints'" in found
    assert "02-half/lab.py: no check()" in found
    assert any("AREA must be one of" in p for p in found)


def test_unknown_lab_and_not_started_lab_and_hint_levels_are_refused(labs_home):
    with pytest.raises(LabError) as unknown:
        catalogue.find("no-such-lab")
    assert "no lab named 'no-such-lab'" in unknown.value.problem and "install-verify" in unknown.value.fix
    lab = catalogue.find("install-verify")
    with pytest.raises(LabError) as idle:
        engine.check(lab)
    assert idle.value.fix == "start it: invoke lab.start install-verify"
    with pytest.raises(LabError) as level:
        engine.hint(lab, len(lab.hints) + 1)
    assert f"--level 1 to {len(lab.hints)}" == level.value.fix
    assert engine.hint(lab, 2) == lab.hints[1]


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_lab_fails_then_is_solved_then_reset_then_resists_a_wrong_fix(lab, labs_home, runs_base):
    if getattr(lab.module, "HOST", None):  # the bound on lab.start is for a warm machine: a host's root filesystem cached
        hosts.base_tarball(progress=lambda m: None)
    box, seconds = engine.start(lab, say=lambda m: None)
    with pytest.raises(LabError):
        engine.start(lab, say=lambda m: None)  # once is enough: the second start is refused, nothing touched

    first = engine.check(lab)
    assert not first.passed and first.wrong and first.hint == lab.hints[0]

    engine.solve(lab)
    solved = engine.check(lab)
    assert solved.passed, solved.wrong
    assert all(f.ok for f in solved.findings) and len(solved.findings) >= 2

    box, reset_seconds = engine.reset(lab, say=lambda m: None)
    again = engine.check(lab)
    assert not again.passed, "after reset, the starting state is back"

    lab.verb("wrong_fix")(box)
    wrong = engine.check(lab)
    assert not wrong.passed, f"{lab.name}: the check passed on a wrong fix: {lab.verb('wrong_fix').__doc__}"

    entry = engine.read_progress()[lab.name]
    assert entry["passed"] and entry["solved_by_kit"] and entry["starts"] == 2 and entry["checks"] == 4
    timings = {"start": seconds, "reset": reset_seconds,
               "checks": [first.seconds, solved.seconds, again.seconds, wrong.seconds]}
    (runs_base / f"lab-{lab.name}.json").write_text(json.dumps(timings))
    assert max(timings["checks"]) < 60, timings  # the bound for a check, well inside pytest's timeout
    assert max(seconds, reset_seconds) < 120, timings  # and for lab.start on a warm machine
    assert engine.stop(lab) and not (labs_home / lab.name).exists()
    assert engine.progress_rows([lab])[0]["state"] == "passed (lab.solve)"


def test_the_trainee_commands_exit_as_documented(labs_home):
    """invoke lab.start / check / hint / progress, as a trainee types them."""
    env = dict(os.environ, BUILDKIT_OPS_LABS_DIR=str(labs_home))

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    started = invoke("lab.start", "plugin-quarantine")
    assert started.returncode == 0, started.stderr
    assert f"source {labs_home}/plugin-quarantine/env" in started.stdout
    failed = invoke("lab.check", "plugin-quarantine")
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "hint:" in failed.stdout
    env_file = (labs_home / "plugin-quarantine/env").read_text()
    assert f"export DOCKER_CONFIG={labs_home}/plugin-quarantine/docker" in env_file
    # the trainee's way: the runbook with the lab's profile
    clean = subprocess.run([sys.executable, "-m", "invoke", "runbook", "plugins-clean", "--profile",
                            str(labs_home / "plugin-quarantine/profile.yaml"), "--mode", "apply"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    passed = invoke("lab.check", "plugin-quarantine")
    assert passed.returncode == 0 and "passed" in passed.stdout, passed.stdout
    progress = invoke("lab.progress")
    assert "1 of" in progress.stdout and "passed" in progress.stdout
    hint = invoke("lab.hint", "plugin-quarantine", "--level", "9")
    assert hint.returncode == 2 and "--level 1 to 3" in hint.stderr
    assert invoke("lab.stop", "plugin-quarantine").returncode == 0
    assert invoke("lab.check", "no-such-lab").returncode == 2

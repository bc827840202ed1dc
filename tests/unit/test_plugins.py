"""The Docker CLI plugin audit and quarantine on a tree of crafted plugins: real files,
real processes, and the real `docker` CLI as the oracle for every verdict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runbook_checks.core import files, paths
from runbook_checks.core.errors import PluginError
from runbook_checks.plugins import audit as audit_mod, clean, discovery, metadata, oracle, quarantine

from .. import plugin_fixtures as pf

DOCKER = shutil.which("docker")
needs_docker = pytest.mark.skipif(not DOCKER, reason="the Docker CLI is not on PATH: no oracle")
TIMEOUT = 1  # our limit per metadata command
HANG = TIMEOUT + 2  # the hanging plugin: docker waits it out, we do not


def scan(tree: pf.Tree, required=("buildx",), timeout=TIMEOUT) -> audit_mod.Audit:
    return audit_mod.Audit(tree.config_dir, list(required), timeout).scan()


def cleanup(audit, qdir: Path, apply: bool, not_required=False, backups: Path | None = None) -> clean.Cleanup:
    return clean.Cleanup(audit, qdir, backups or qdir.parent / "backups", not_required, apply)


@pytest.fixture(scope="module")
def hang_tree(tmp_path_factory):
    """Every fixture, the hanging one included: built and audited once, shared."""
    tree = pf.build(tmp_path_factory.mktemp("plugins") / "tree", hang_seconds=HANG)
    start = time.monotonic()
    audit = scan(tree)
    seconds = time.monotonic() - start
    return tree, audit, seconds


@pytest.fixture
def tree(tmp_path):
    """Every fixture but the hanging one: a fresh tree per test."""
    return pf.build(tmp_path / "tree")


# --------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------
def test_a_hanging_plugin_does_not_hang_the_audit(hang_tree):
    tree, audit, seconds = hang_tree
    sleepy = next(p for p in audit.plugins if p.name == "sleepy")
    assert not sleepy.valid and sleepy.reason == "timeout" and "no answer within 1s" in sleepy.error
    assert seconds < HANG, f"the audit took {seconds:.1f}s: it waited for the hanging plugin"
    assert sleepy.metadata_seconds < TIMEOUT + 1


def test_every_fixture_gets_the_verdict_we_crafted(hang_tree):
    tree, audit, _ = hang_tree
    fixtures = pf.present(tree)
    assert len([f for f in fixtures if f.verdict != "ignored"]) >= 10
    found = {p.path: p for p in audit.plugins}
    ignored = {i.path for i in audit.ignored}
    for f in fixtures:
        path = str(tree.path(f))
        if f.verdict == "ignored":
            assert path in ignored and path not in found, f.key
            continue
        plugin = found[path]
        if f.verdict == "shadowed":
            assert plugin.shadowed_by == str(tree.root / f.message), f.key
        elif f.verdict == "valid":
            assert plugin.valid and plugin.active, (f.key, plugin.error)
        else:
            assert not plugin.valid and plugin.active, f.key
            if f.key != "sleepy":  # docker's message; ours is the timeout
                assert f.message in plugin.error or f.key in ("garbage", "wrongtype"), (f.key, plugin.error)
    assert not (tree.plugin_dir / "README").name in {Path(p).name for p in found}


@needs_docker
def test_the_kits_verdicts_equal_dockers_for_every_fixture(hang_tree):
    tree, audit, _ = hang_tree
    outcome = audit.compare_with_docker()  # raises PluginError on any disagreement
    assert outcome.status == "ok"
    listed = {p["Path"]: p for p in audit.docker["plugins"]}
    for f in pf.present(tree):
        path = str(tree.path(f))
        if f.verdict == "ignored":
            assert path not in listed, f"docker lists {f.key}"
        elif f.verdict == "shadowed":
            winner = str(tree.root / f.message)
            assert path in listed[winner]["ShadowedPaths"], f.key
        elif f.verdict == "valid":
            assert not listed[path].get("Err"), (f.key, listed[path])
        else:
            assert f.message in listed[path]["Err"], (f.key, listed[path]["Err"])


@needs_docker
def test_a_disagreement_fails_and_names_the_plugin(hang_tree):
    tree, audit, _ = hang_tree
    listed = json.loads(json.dumps(audit.docker["plugins"]))
    hello = next(p for p in listed if p["Path"].endswith("docker-hello"))
    hello["Err"] = "pretend docker refused it"
    plugins_copy = [discovery.Plugin(**{k: v for k, v in p.to_dict().items() if k != "active"}) for p in audit.plugins]
    lines = oracle.compare(plugins_copy, audit.ignored, listed)
    assert lines == [f"{hello['Path']}: docker says invalid: pretend docker refused it, the kit says valid"]


def test_search_order_is_dockers(tree):
    audit = scan(tree)
    order = [(d.path, d.origin) for d in audit.dirs]
    assert order[:3] == [(str(tree.extra_dir), "cliPluginsExtraDirs"), (str(tree.gone_dir), "cliPluginsExtraDirs"),
                         (str(tree.plugin_dir), "DOCKER_CONFIG")]
    assert [d for d, _ in order[3:]] == list(discovery.SYSTEM_PLUGIN_DIRS)
    assert audit.dirs[1].state == "missing"
    twice = [p for p in audit.plugins if p.name == "twice"]
    assert [p.directory for p in twice] == [str(tree.extra_dir), str(tree.plugin_dir)]
    assert twice[0].shadows == [str(tree.plugin_dir / "docker-twice")]


def test_docker_config_defaults_to_the_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert discovery.config_dir("") == tmp_path
    assert discovery.config_dir("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("DOCKER_CONFIG")
    assert discovery.config_dir("") == Path.home() / ".docker"


def test_inventory_records_files_owner_purpose_and_findings(tree, tmp_path):
    audit = scan(tree)
    by_name = {p.name: p for p in audit.active}
    hello = by_name["hello"]
    assert hello.sha256 == files.sha256(tree.plugin_dir / "docker-hello")
    assert hello.size == (tree.plugin_dir / "docker-hello").stat().st_size
    assert hello.mode == "0755" and hello.owner == discovery.user_name(os.geteuid())
    assert hello.required == "not required" and by_name["buildx"].required == "required"
    assert by_name["buildx"].purpose.startswith("Docker Buildx") and by_name["buildx"].status == "current"
    assert hello.purpose == "a crafted test plugin" and hello.metadata["Vendor"] == pf.VENDOR
    assert hello.last_use is None and "not run since it was written" in hello.last_use_note
    assert by_name["open"].insecure and "chmod o-w" in by_name["open"].insecure[0]
    if os.geteuid() == 0:
        assert "neither root nor the current user" in by_name["foreign"].insecure[0]
    assert not hello.insecure
    dangling = by_name["dangling"]
    assert dangling.kind == "symlink" and dangling.sha256 is None and "does not resolve" in dangling.notes[0]
    assert by_name["linked"].link_target == str(tree.extra_dir / "docker-twice")
    facts = audit.facts()
    assert {"name", "path", "valid", "error"} <= set(facts["inventory"][0])
    assert facts["plugins_insecure"] == len(audit.insecure) >= 1


def test_hashing_does_not_count_as_use(tree):
    path = tree.plugin_dir / "docker-hello"
    os.utime(path, (1_000_000_000, 1_000_000_000))
    files.sha256(path)
    assert os.stat(path).st_atime == 1_000_000_000


def test_last_use_says_how_far_to_trust_it():
    st = os.stat_result((0o100755, 0, 0, 1, 0, 0, 10, 2_000_000_000, 1_000_000_000, 1_000_000_000))
    assert discovery.last_use(st, discovery.Mount("/x", ("rw", "noatime"), "ext4"))[0] is None
    assert "noatime" in discovery.last_use(st, discovery.Mount("/x", ("rw", "noatime"), "ext4"))[1]
    when, note = discovery.last_use(st, discovery.Mount("/x", ("rw", "relatime"), "ext4"))
    assert when == "2033-05-18T03:33:20Z" and "relatime" in note
    when, note = discovery.last_use(st, discovery.Mount("/x", ("rw",), "ext4"))
    assert when and note.startswith("access time")
    assert discovery.mount_of("/proc/self") .point == "/proc"


def test_inventory_files_json_and_markdown(tree, tmp_path):
    audit = scan(tree)
    outcome = audit.write_inventory(tmp_path / "inventory")
    document = json.loads(Path(outcome.facts["inventory_json"]).read_text())
    assert document["docker_config"] == str(tree.config_dir)
    assert {p["path"] for p in document["plugins"]} == {p.path for p in audit.plugins}
    table = Path(outcome.facts["inventory_markdown"]).read_text()
    assert "| `hello` | valid | not required | a crafted test plugin |" in table
    assert "**invalid**: plugin candidate \"Upper\" did not match" in table


def test_findings_fail_the_verdict_with_a_fix_each(tree):
    audit = scan(tree, required=("buildx", "compose"))
    with pytest.raises(PluginError) as err:
        audit.verdict()
    text = str(err.value)
    assert "required plugin compose is missing; fix: install it" in text
    assert f"config.json lists {tree.gone_dir}, which does not exist" in text
    assert "insecure:" in text and "invalid:" in text and "fix:" in text
    assert audit.usage().facts["plugins_not_required"]


@pytest.mark.parametrize("raw,valid,words", [
    (b'{"SchemaVersion":"0.1.0","Vendor":"v"}', True, ""),
    (b'  {"schemaversion":"0.1.0","VENDOR":"v"}\n', True, ""),  # Go folds key case
    ('{"\u017fchemaVersion":"0.1.0","Vendor":"v"}'.encode(), True, ""),  # long s folds to s in Go
    (b'{"SchemaVersion":"0.1.0","Vendor":"v","Vendor":""}', False, "vendor"),  # later keys win
    (b'{"SchemaVersion":"0.1.0","Vendor":5,"Vendor":"v"}', False, "number"),  # a type error sticks
    (b'{"SchemaVersion":"0.1.0","Vendor":"v","Version":null,"Hidden":"yes","Features":5}', True, ""),
    (b'null', False, "SchemaVersion"),
    (b'[]', False, "array"),
    (b'"x"', False, "string"),
    (b'{"SchemaVersion":"0.1.0","Vendor":"v"} x', False, "invalid metadata"),
    (b'{"SchemaVersion":"0.1.0","Vendor":"v","X":NaN}', False, "invalid metadata"),
    (b'\xef\xbb\xbf{"SchemaVersion":"0.1.0","Vendor":"v"}', False, "invalid metadata"),  # Go refuses a BOM
    (b'{"SchemaVersion":"0.1.0","Vendor":"v\xff"}', True, ""),  # Go replaces bad UTF-8
    (b'', False, "invalid metadata"),
])
def test_metadata_is_read_the_way_go_reads_it(raw, valid, words):
    reason, error, _ = metadata.judge_metadata(raw)
    assert (not reason) == valid, error
    assert words.lower() in error.lower()


def test_names_and_builtins():
    assert metadata.judge_name("buildx") == ("", "")
    assert metadata.judge_name("")[0] == "name"
    assert metadata.judge_name("a1")[0] == ""
    assert metadata.judge_name("1a")[0] == "name"
    assert metadata.judge_name("x\n")[0] == "name"  # Go's $ does not match before a newline
    assert metadata.judge_name("bake")[1] == 'plugin "bake" duplicates builtin command'


@needs_docker
def test_builtin_table_covers_the_installed_dockers_commands(tmp_path):
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path))
    out = subprocess.run([DOCKER, "--help"], env=env, capture_output=True, text=True, timeout=60).stdout
    section, commands = "", set()
    for line in out.splitlines():
        if line and not line.startswith(" "):
            section = line
        elif "Commands" in section and line.startswith("  ") and line.split():
            word = line.split()[0]
            if not word.endswith("*"):  # plugins are starred
                commands.add(word)
    assert commands and commands <= metadata.BUILTIN_COMMANDS, sorted(commands - metadata.BUILTIN_COMMANDS)


def test_config_json_that_is_not_json_is_reported_never_rewritten(tmp_path):
    tree = pf.build(tmp_path / "tree", ["hello", "buildx"], config='{"cliPluginsExtraDirs": ["/x",\n')
    before = tree.config_json.read_bytes()
    audit = scan(tree)
    assert "is not JSON" in audit.config.error
    assert [d.origin for d in audit.dirs][0] == "DOCKER_CONFIG"  # like docker: no extra dirs at all
    assert any("config.json" in f and "by hand" in f for f in audit.findings())
    job = cleanup(audit, tmp_path / "q", apply=True)
    with pytest.raises(PluginError, match="never rewritten"):
        job.prune_config()
    assert tree.config_json.read_bytes() == before
    assert not (tmp_path / "backups").exists()
    if DOCKER:
        assert audit.compare_with_docker().status == "ok"


@pytest.mark.parametrize("text,error", [
    ("[]", "not an object"), ('{"cliPluginsExtraDirs": "/one/dir"}', "not a list"), ("", ""), ("null", ""),
])
def test_config_json_shapes(tmp_path, text, error):
    (tmp_path / "config.json").write_text(text)
    cfg = discovery.read_config(tmp_path)
    assert (error in cfg.error) if error else not cfg.error
    assert cfg.extra_dirs == []


# --------------------------------------------------------------------------------------
# quarantine and restore
# --------------------------------------------------------------------------------------
def test_check_mode_changes_nothing(tree, tmp_path):
    before = pf.tree_state(tmp_path)
    audit = scan(tree)
    job = cleanup(audit, tmp_path / "q", apply=False)
    moved = job.quarantine()
    assert moved.status == "changed" and "would move" in moved.message
    assert str(tree.plugin_dir / "docker-noexec") in moved.diff
    pruned = job.prune_config()
    assert pruned.status == "changed" and f'-\t\t"{tree.gone_dir}"' in pruned.diff
    assert job.stability().status == "skipped"
    assert pf.tree_state(tmp_path) == before
    assert not (tmp_path / "q").exists() and not (tmp_path / "backups").exists()


def test_clean_moves_invalid_plugins_and_is_idempotent(tree, tmp_path):
    qdir = tmp_path / "q"
    audit = scan(tree)
    invalid = {p.path for p in audit.invalid}
    job = cleanup(audit, qdir, apply=True)
    first = job.quarantine()
    assert first.status == "changed"
    assert {e["original_path"] for e in first.facts["quarantined"]} == invalid
    assert not any(os.path.lexists(p) for p in invalid)
    assert job.prune_config().status == "changed"
    config = json.loads(tree.config_json.read_text())
    assert config == {"auths": {}, "cliPluginsExtraDirs": [str(tree.extra_dir)]}
    assert oct(tree.config_json.stat().st_mode & 0o777) == "0o600"
    assert len(list((tmp_path / "backups").glob("config.json.*"))) == 1
    if DOCKER:
        job.audit.docker = {"binary": DOCKER}
    assert job.stability().status == "ok"
    manifest = json.loads((qdir / "manifest.json").read_text())["entries"]
    assert {"original_path", "mode", "owner", "sha256", "reason", "time"} <= set(manifest[0])

    state = pf.tree_state(tmp_path)
    again = cleanup(scan(tree), qdir, apply=True)
    assert again.quarantine().status == "ok"
    assert again.prune_config().status == "ok"
    assert pf.tree_state(tmp_path) == state


def test_clean_then_restore_round_trips_every_plugin(tmp_path):
    """Everything moves (nothing required, clean_not_required), then comes back
    byte-identical with its mode, owner, link target and mtime."""
    tree = pf.build(tmp_path / "tree")
    before = pf.tree_state(tree.root)
    audit = scan(tree, required=())
    job = cleanup(audit, tmp_path / "q", apply=True, not_required=True)
    moved = job.quarantine()
    assert len(moved.facts["quarantined"]) == len(audit.plugins)
    left = {rel for rel, st in pf.tree_state(tree.root).items() if st[0] in ("file", "link")}
    assert left == {"config/config.json", "config/cli-plugins/README"}
    done = quarantine.restore(tmp_path / "q", everything=True)
    assert len(done) == len(audit.plugins)
    assert pf.tree_state(tree.root) == before
    assert not quarantine.Quarantine(tmp_path / "q").pending()
    with pytest.raises(PluginError, match="no quarantined plugin named 'hello'"):
        quarantine.restore(tmp_path / "q", "hello")


def test_restore_one_by_name_and_never_over_a_reinstall(tree, tmp_path):
    audit = scan(tree)
    cleanup(audit, tmp_path / "q", apply=True).quarantine()
    noexec = tree.plugin_dir / "docker-noexec"
    pf.write(noexec, "#!/bin/sh\n# a reinstall\n")
    with pytest.raises(PluginError, match="exists again") as err:
        quarantine.restore(tmp_path / "q", "noexec")
    assert "move" in err.value.fix
    assert noexec.read_text() == "#!/bin/sh\n# a reinstall\n"
    noexec.unlink()
    assert quarantine.restore(tmp_path / "q", "noexec")[0].startswith("noexec:")
    assert oct(noexec.stat().st_mode & 0o777) == "0o644"
    assert "exitthree" in " ".join(quarantine.listing(tmp_path / "q"))


def test_a_name_collision_in_quarantine_keeps_both(tree, tmp_path):
    qdir = tmp_path / "q"
    first = cleanup(scan(tree), qdir, apply=True).quarantine()
    garbage = tree.plugin_dir / "docker-garbage"
    pf.write(garbage, pf.script("still not json, second edition"))
    second = cleanup(scan(tree), qdir, apply=True).quarantine()
    assert [e["stored"] for e in second.facts["quarantined"]] == ["docker-garbage.2"]
    stored = {e["stored"]: e for e in first.facts["quarantined"] + second.facts["quarantined"]}
    assert "still not json, second edition" in (qdir / "docker-garbage.2").read_text()
    assert files.sha256(qdir / "docker-garbage") == stored["docker-garbage"]["sha256"]
    done = quarantine.restore(qdir, "garbage")
    assert "second edition" in garbage.read_text()
    assert any("older copy docker-garbage" in line for line in done)
    assert (qdir / "docker-garbage").exists()


def test_quarantine_across_filesystems(tree):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tree.root).st_dev:
        pytest.skip(f"/dev/shm is not a separate filesystem from {tree.root}: no cross-filesystem move to test")
    before = pf.tree_state(tree.root)
    qdir = Path(tempfile.mkdtemp(prefix="bkq-", dir=shm)) / "cli-plugins"
    try:
        audit = scan(tree, required=())
        moved = cleanup(audit, qdir, apply=True, not_required=True).quarantine()
        assert {e["moved_by"] for e in moved.facts["quarantined"]} == {"copy"}
        assert not list(qdir.glob(".*partial*"))
        quarantine.restore(qdir, everything=True)
        assert pf.tree_state(tree.root) == before
    finally:
        shutil.rmtree(qdir.parent)


def test_unwritable_plugin_directory_moves_nothing():
    """As a user who may read the plugins but not move them: refused before any move."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (and setpriv) to act as another user")
    base = Path(tempfile.mkdtemp(prefix="bkpl-", dir="/tmp"))  # pytest's tmp dirs are 0700
    try:
        os.chmod(base, 0o755)
        tree = pf.build(base / "tree", ["hello", "exitthree", "garbage"])
        before = pf.tree_state(base)
        code = (
            "from pathlib import Path; from runbook_checks.plugins import audit, clean\n"
            f"a = audit.Audit(Path({str(tree.config_dir)!r}), [], 2).scan()\n"
            f"c = clean.Cleanup(a, Path('/tmp/bkq-nobody-{os.getpid()}'), Path('/tmp'), False, True)\n"
            "try:\n    c.quarantine()\nexcept Exception as e:\n    print(e)\n")
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                              code], capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=60)
        assert "nothing was moved" in out.stdout and "docker-exitthree" in out.stdout, out.stdout + out.stderr
        assert pf.tree_state(base) == before
    finally:
        shutil.rmtree(base)


def test_protected_hardlinks_fall_back_to_rename():
    """A user may move a root-owned plugin out of their own directory, but the kernel
    (fs.protected_hardlinks) refuses to hard-link it: the move renames instead."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (and setpriv) to act as another user")
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("fs.protected_hardlinks is off: hard links are never refused here")
    base = Path(tempfile.mkdtemp(prefix="bkpl-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        tree = pf.build(base / "tree", ["hello", "exitthree"])
        for path in [base / "tree", *(base / "tree").rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        os.chown(tree.plugin_dir / "docker-exitthree", 0, 0)  # root's file in nobody's directory
        before = pf.tree_state(base / "tree")
        code = (
            "import json; from pathlib import Path; from runbook_checks.plugins import audit, clean, quarantine\n"
            f"a = audit.Audit(Path({str(tree.config_dir)!r}), [], 2).scan()\n"
            f"q = Path({str(base / 'q')!r})\n"
            "out = clean.Cleanup(a, q, q.parent / 'b', False, True).quarantine()\n"
            "print(json.dumps([e['moved_by'] for e in out.facts['quarantined']]))\n"
            "print(quarantine.restore(q, 'exitthree'))\n")
        os.chown(base, 65534, 65534)
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                              code], capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout.splitlines()[0]) == ["rename"]
        after = pf.tree_state(base / "tree")
        assert after == before  # back, still root's, as nobody could not have changed the owner
    finally:
        shutil.rmtree(base)


def test_a_plugin_that_vanishes_mid_clean_stops_it_and_says_what_moved(tree, tmp_path):
    audit = scan(tree)
    job = cleanup(audit, tmp_path / "q", apply=True)
    plan = [m.plugin.path for m in job.plan()]
    Path(plan[1]).unlink()  # uninstalled between the scan and the move
    with pytest.raises(PluginError) as err:
        job.quarantine()
    text = str(err.value)
    assert f"could not quarantine {plan[1]}" in text and f"{plan[0]} -> " in text
    assert [e.original_path for e in quarantine.Quarantine(tmp_path / "q").pending()] == [plan[0]]
    assert os.path.lexists(plan[2])  # nothing after the failure moved


def test_the_quarantine_must_not_be_a_plugin_directory(tree):
    job = cleanup(scan(tree), tree.extra_dir, apply=True)
    with pytest.raises(PluginError, match="docker searches"):
        job.quarantine()


def test_an_unreadable_manifest_is_never_overwritten(tree, tmp_path):
    qdir = tmp_path / "q"
    qdir.mkdir()
    (qdir / "manifest.json").write_text("{broken")
    with pytest.raises(PluginError, match="will not write over it"):
        cleanup(scan(tree), qdir, apply=True).quarantine()
    assert (qdir / "manifest.json").read_text() == "{broken"
    assert (tree.plugin_dir / "docker-exitthree").exists()


@needs_docker
def test_stability_fails_while_docker_warns(tmp_path):
    tree = pf.build(tmp_path / "tree", ["hello", "exitthree"])
    audit = scan(tree, required=())
    audit.docker = {"binary": DOCKER}
    with pytest.raises(PluginError) as err:
        cleanup(audit, tmp_path / "q", apply=True).stability()
    assert 'docker still warns: WARNING: Plugin "' in str(err.value) and "docker-exitthree" in str(err.value)


def test_stability_fails_when_a_required_plugin_stops_answering(tmp_path):
    tree = pf.build(tmp_path / "tree", ["buildx", "hello"])
    audit = scan(tree, required=("buildx",))
    os.chmod(tree.plugin_dir / "docker-buildx", 0o644)  # broken after the audit saw it working
    with pytest.raises(PluginError) as err:
        cleanup(audit, tmp_path / "q", apply=True).stability()
    assert "required plugin buildx answered before the clean and does not now" in str(err.value)
    assert "invoke plugins.restore buildx" in str(err.value)


def test_stability_names_a_required_plugin_that_was_never_there(tmp_path):
    tree = pf.build(tmp_path / "tree", ["hello"])
    audit = scan(tree, required=("buildx",))
    outcome = cleanup(audit, tmp_path / "q", apply=True).stability()
    assert outcome.status == "ok" and outcome.facts["required_not_working"] == ["buildx"]
    assert "buildx (missing before the clean too); fix: invoke runbook plugins-configure" in outcome.message


def test_default_quarantine_dir_follows_the_layout(tmp_path):
    from runbook_checks.core import layout

    flat = layout.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    fhs = layout.for_params({"profile": "production", "state_dir": str(tmp_path)})
    assert quarantine.resolve_dir("", flat) == tmp_path / "quarantine/cli-plugins"
    assert quarantine.resolve_dir("", fhs) == tmp_path / "var/lib/buildkit-ops/quarantine/cli-plugins"
    assert quarantine.resolve_dir("/q", flat) == Path("/q")


def test_config_diff_never_shows_credentials(tree, tmp_path):
    """config.json holds registry credentials: the pruning diff shows only the key it changes."""
    config = json.loads(tree.config_json.read_text())
    config["auths"] = {"registry.example:5000": {"auth": "c2VjcmV0dXNlcjpzM2NyM3Q="}}
    tree.config_json.write_text(json.dumps(config, indent="\t") + "\n")
    for apply in (False, True):
        out = cleanup(scan(tree), tmp_path / "q", apply=apply).prune_config()
        assert out.status == "changed" and f'-\t\t"{tree.gone_dir}"' in out.diff
        assert "c2VjcmV0" not in out.diff + out.message and "auths" not in out.diff
    assert json.loads(tree.config_json.read_text())["auths"] == config["auths"]


@pytest.mark.skipif(not DOCKER, reason="the docker CLI is not installed")
def test_a_hanging_oracle_is_killed_with_its_plugins(tmp_path):
    """docker waits for a hanging plugin for ever; on our timeout both go, nothing lingers."""
    plugin_dir = tmp_path / "cfg/cli-plugins"
    plugin_dir.mkdir(parents=True)
    hang = plugin_dir / "docker-hangs"
    hang.write_text("#!/bin/sh\nsleep 31.4159\n")
    hang.chmod(0o755)
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "cfg"))
    with pytest.raises(PluginError, match="did not answer within 1s"):
        oracle.docker_verdicts(DOCKER, env, timeout=1)
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", "sleep 31.4159"], capture_output=True, text=True).stdout.split()
    assert left == []

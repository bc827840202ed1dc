"""Bad input, as an operator types it: every case runs `invoke ...` for real and must exit
non-zero with the problem named and a fix, print no traceback, and leave the state
directory and the run records exactly as they were (refused parameters: exit 2, no run
record). No daemon is started: the refusals come before anything runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runbook_checks.core.paths import PROJECT_ROOT

LONG = "/tmp/" + "x" * 110
SITE_FILES = {
    "good.yaml": "extends: production\nmax_parallelism: 8\nlog_level: debug\n",
    "malformed.yaml": "extends: production\nmax_parallelism: [8\nlog_level: debug\n",
    "noextends.yaml": "max_parallelism: 8\n",
    "extends-staging.yaml": "extends: staging\n",
    "list.yaml": "- extends: production\n",
    "unknown-key.yaml": "extends: production\nmax_paralelism: 8\n",
    "ill-typed.yaml": "extends: production\nmax_parallelism: many\n",
    "duplicate.yaml": "extends: production\nlog_level: info\nlog_level: debug\n",
    "mode.yaml": "extends: ci\nmode: apply\n",
    "system-dir.yaml": "extends: lab\nstate_dir: /etc\n",
    "refused-value.yaml": "extends: ci\nemail_to: nobody\n",
}

# (invoke arguments, what the refusal must say, exit code); SITE is the site profiles' folder
CASES = [
    # state_dir: absolute, plain, not a system directory, not holding the checkout, short enough
    ("runbook install --set state_dir=relative/dir", "is not an absolute path", 2),
    ("runbook install --set state_dir=/", "is a system directory", 2),
    ("runbook install --set state_dir=/etc", "is a system directory", 2),
    ("runbook install --set state_dir=/usr", "is a system directory", 2),
    ("runbook install --set state_dir=/var", "is a system directory", 2),
    ("runbook install --set state_dir=/tmp", "is a system directory", 2),
    ("runbook install --set state_dir=/home", "is a system directory", 2),
    ("runbook configure --profile ci --set state_dir=/etc", "is a system directory", 2),
    (["runbook", "install", "--set", "state_dir=/tmp/a b"], "holds a character", 2),
    (["runbook", "install", "--set", "state_dir=/tmp/x\nExecStart=/bin/evil"], "holds a character", 2),
    (f"runbook install --set state_dir={LONG}", "unix sockets allow", 2),
    (f"runbook install --set state_dir={PROJECT_ROOT}", "would remove it", 2),
    (f"runbook install --set state_dir={Path.home()}", "is a system directory", 2),
    ("runbook install --set state_dir=~/lab", "is not an absolute path", 2),
    # other paths
    ("runbook install --set archive_path=buildkit.tgz", "'archive_path'", 2),
    ("runbook install --set s3_credentials_file=creds", "'s3_credentials_file'", 2),
    ("runbook cache --set cache_dir=/tmp/a,b", "'cache_dir'", 2),
    (["runbook", "plugins-audit", "--set", "docker_config=/tmp/d c"], "'docker_config'", 2),
    ("runbook plugins-clean --set quarantine_dir=quarantine", "'quarantine_dir'", 2),
    ("runbook dashboards --set dashboards_dir=docs", "'dashboards_dir'", 2),
    # --set itself
    ("runbook install --set mode=apply", "use --mode", 2),
    ("runbook install --set profile=production", "use --profile", 2),
    ("runbook configure --set debug_port=1234 --set debug_port=5678", "is given twice", 2),
    ("runbook configure --set novalue", "is not key=value", 2),
    ("runbook configure --set =x", "is not key=value", 2),
    ("runbook configure --set colour=blue", "has no parameter 'colour'", 2),
    ("runbook configure --set paralelism=2", "did you mean max_parallelism", 2),
    # values
    ("runbook configure --set max_parallelism=0", "below the lowest value", 2),
    ("runbook configure --set max_parallelism=300", "above the highest value", 2),
    ("runbook configure --set max_parallelism=many", "is not a whole number", 2),
    ("runbook configure --set log_level=loud", "use one of: error, warn, info, debug, trace", 2),
    ("runbook configure --set debug_port=70000", "above the highest value", 2),
    ("runbook configure --set tcp_address=tcp://0.0.0.0:1234", "not a loopback address", 2),
    ("runbook install --set buildkit_version=latest", "is not a release tag", 2),
    ("runbook install --set release_mirror=file:///etc", "is not an http:// or https:// URL", 2),
    ("runbook install --set release_sha256=xyz", "64 hexadecimal digits", 2),
    ("runbook install --set cpu_quota=lots", "a percentage of one CPU", 2),
    ("runbook install --set install_runc=maybe", "is not true or false", 2),
    ("runbook configure --set memory_max=12parsecs", "is not a size", 2),
    (["runbook", "configure", "--set", "gc_policy=[{max_used_space: 12 parsecs}]"], "gc_policy[0].max_used_space", 2),
    (["runbook", "configure", "--set", "gc_policy=[{bogus: 1}]"], "there is no field 'bogus'", 2),
    ("runbook configure --set insecure_entitlements=root", "use one of: network.host", 2),
    ("runbook monitoring --set scrape_interval=5m", "fewer than 4 scrapes", 2),
    ("runbook monitoring --set alert_for=0s", "is not a duration above 0", 2),
    ("runbook monitoring --set failure_ratio_max=2", "is not below 1", 2),
    ("runbook alerting --set email_to=nobody", "one email address", 2),
    ("runbook cache --set cache_backend=gha", "use one of: local, registry, inline, s3", 2),
    ("runbook cache --set cache_ref=cache:latest", "is not an image reference", 2),
    ("runbook cache --set cache_bucket=A", "S3 bucket name", 2),
    ("runbook plugins-audit --set required_plugins=Bad-Name", "Docker CLI plugin name", 2),
    ("runbook prune --set prune_keep_storage=10%", "a share of the disk", 2),
    # runbook and mode names
    ("runbook frobnicate", "no runbook named 'frobnicate'", 2),
    ("runbook --list frobnicate", "no runbook named 'frobnicate'", 2),
    ("runbook install --mode maybe", "is not a mode", 2),
    ("maint.prune --mode maybe", "is not a mode", 2),
    # profiles and site profiles
    ("runbook install --profile staging", "neither a profile nor a file", 2),
    ("runbook install --profile /nonexistent/site.yaml", "does not exist", 2),
    ("runbook install --profile SITE/malformed.yaml", "is not valid YAML", 2),
    ("runbook install --profile SITE/noextends.yaml", "must say which profile it extends", 2),
    ("runbook install --profile SITE/extends-staging.yaml", "it says 'staging'", 2),
    ("runbook install --profile SITE/list.yaml", "is not a mapping", 2),
    ("runbook install --profile SITE/unknown-key.yaml", "unknown-key.yaml:2: no runbook has a parameter", 2),
    ("runbook configure --profile SITE/ill-typed.yaml", "ill-typed.yaml:2", 2),
    ("runbook configure --profile SITE/duplicate.yaml", "is set twice", 2),
    ("runbook install --profile SITE/mode.yaml", "'mode' is not a profile setting", 2),
    ("runbook install --profile SITE/system-dir.yaml", "system-dir.yaml:2", 2),
    ("runbook alerting --profile SITE/refused-value.yaml", "refused-value.yaml:2", 2),
    ("profile.check SITE/unknown-key.yaml", "did you mean max_parallelism", 2),
    ("profile.show staging", "neither a profile nor a file", 2),
    # the other tasks' options
    ("bench.cache --registry-port abc", "is not a TCP port", 2),
    ("bench.cache --scenarios cold,warm,edit,fresh-gha", "fresh-gha is not a scenario of the cache benchmark", 2),
    ("bench.cache --scenarios fresh-s3", "list cold, warm and edit too", 2),
    ("bench.cache --workloads small,nodejs", "nodejs is not a workload under workloads/", 2),
    ("up --set debug_prot=1", "no runbook of `invoke up` has", 2),
    ("up --set max_parallelism=0", "below the lowest value", 2),
    ("up --set alert_for=0s", "is not a duration above 0", 2),
    ("up --set debug_port=1 --set debug_port=2", "is given twice", 2),
    ("up --set mode=check", "use --mode", 2),
    ("status --state-dir relative", "is not an absolute path", 2),
    ("status --state-dir /etc", "is a system directory", 2),
    ("down --purge --state-dir /", "is a system directory", 2),
    ("plugins.restore buildx --quarantine-dir quarantine", "--quarantine-dir", 2),
    ("runbook install --bogus-flag", "No idea what '--bogus-flag' is", 1),
    # rehearsal hosts, certificates, the audit log
    ("host.up Build_1", "is not 1 to 11 lowercase letters", 2),
    ("host.up a-name-too-long", "is not 1 to 11 lowercase letters", 2),
    ("host.shell nosuchhost", "there is no rehearsal host 'nosuchhost'", 2),
    ("runbook verify --profile production --host nosuchhost", "there is no rehearsal host", 2),
    ("certs.issue web --out /tmp/kit-refused-bundle --host nosuchhost", "there is no rehearsal host", 2),
    ("certs.issue web --out /tmp/kit-refused-bundle --host h1 --state-dir /srv/bk", "--host and --state-dir both", 2),
    ("certs.issue web --out /tmp/kit-refused-bundle --state-dir /tmp/kit-no-install", "there is no front door", 2),
    ("certs.issue web --out /tmp/kit-refused-bundle --state-dir /tmp/kit-no-install --days many",
     "is not a number of days", 2),
    ("certs.revoke web --state-dir /tmp/kit-no-install", "no certificate of team 'web' is in force", 2),
    ("certs.list --state-dir /etc", "is a system directory", 2),
    ("report.audit --state-dir /tmp/kit-no-install", "there is no audit log", 2),
    ("report.audit --state-dir /tmp/kit-no-install --since soon", "soon", 2),
    ("runbook access --profile production --set frontdoor_names=[bad_name!]", "is not a DNS name", 2),
    ("runbook access --profile production --set frontdoor_port=70000", "65535", 2),
    ("runbook access --profile production --set audit_max_bytes=10%", "a size in bytes", 2),
]


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    base = tmp_path_factory.mktemp("refusals")
    state, runs, site = base / "state", base / "runs", base / "site"
    for folder in (state, runs, site):
        folder.mkdir()
    (state / "etc").mkdir()
    (state / "etc" / "buildkitd.toml").write_text("# an operator's lab, which no refusal may touch\n")
    (runs / "install").mkdir()
    (runs / "install" / "20260101T000000.000000Z.json").write_text("{}\n")
    for name, text in SITE_FILES.items():
        (site / name).write_text(text)
    return state, runs, site


def invoke(args, state: Path, runs: Path, site: Path, **env) -> subprocess.CompletedProcess:
    argv = args.replace("SITE", str(site)).split() if isinstance(args, str) else args
    environment = {**os.environ, "BUILDKIT_OPS_STATE_DIR": str(state), "BUILDKIT_OPS_RUNS_DIR": str(runs),
                   "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "invoke", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env=environment, timeout=300)


def test_every_bad_input_is_refused_before_anything_is_written(places):
    state, runs, site = places
    before = tree_hash(state), tree_hash(runs)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: invoke(case[0], state, runs, site), CASES))
    failures = []
    for (args, words, code), proc in zip(CASES, results):
        said = proc.stdout + proc.stderr
        shown = " ".join(args) if isinstance(args, list) else args
        if proc.returncode != code:
            failures.append(f"{shown}: exit {proc.returncode}, not {code}:\n{said[-800:]}")
        elif "Traceback" in said:
            failures.append(f"{shown}: printed a traceback:\n{said[-1500:]}")
        elif words not in said:
            failures.append(f"{shown}: does not say {words!r}:\n{said[-800:]}")
        elif code == 2 and not ("error:" in said and "fix:" in said):
            failures.append(f"{shown}: no `error:` and `fix:`:\n{said[-800:]}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n\n" + "\n\n".join(failures)
    assert (tree_hash(state), tree_hash(runs)) == before, "a refused input changed the state directory or runs/"
    assert len({(" ".join(a) if isinstance(a, list) else a) for a, _, _ in CASES}) == len(CASES) >= 60


def test_an_unwritable_place_for_run_records_is_refused(places, tmp_path):
    state, _, site = places
    not_a_dir = tmp_path / "runs-file"
    not_a_dir.write_text("a file where the run records would go\n")
    proc = invoke("runbook verify", state, not_a_dir, site)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "run records (BUILDKIT_OPS_RUNS_DIR)" in proc.stderr and "fix:" in proc.stderr
    proc = invoke("status", state, not_a_dir, site, BUILDKIT_OPS_STATE_DIR="relative/lab")
    assert proc.returncode == 2 and "BUILDKIT_OPS_STATE_DIR 'relative/lab' is not an absolute path" in proc.stderr


def test_a_site_profile_drives_a_check_run_and_shows_where_each_value_comes_from(places):
    state, runs, site = places
    shown = invoke("profile.show SITE/good.yaml --runbook configure --json", state, runs, site)
    assert shown.returncode == 0, shown.stderr
    import json

    values = json.loads(shown.stdout)
    assert values["max_parallelism"] == {"value": 8, "source": f"{site / 'good.yaml'}:2"}
    assert values["log_level"] == {"value": "debug", "source": f"{site / 'good.yaml'}:3"}
    assert values["snapshotter"]["source"].startswith("notebooks/profiles/production.yaml:")
    assert values["ready_timeout"]["source"] == "default"
    assert values["profile"] == {"value": "production", "source": "--profile"}
    checked = invoke("profile.check SITE/good.yaml", state, runs, site)
    assert checked.returncode == 0 and "all valid" in checked.stdout
    with_set = invoke("profile.show SITE/good.yaml --runbook configure --json --set log_level=warn", state, runs, site)
    assert json.loads(with_set.stdout)["log_level"] == {"value": "warn", "source": "--set"}


def test_a_site_profile_drives_a_check_run(tmp_path, places):
    """configure in check mode with a site profile extending production, on a tree
    rendered under a temporary state_dir: the two overrides reach buildkitd.toml's diff,
    the record names the site file, and nothing is written."""
    import json

    _, _, site = places
    runs, tree = tmp_path / "runs", tmp_path / "prod"
    proc = invoke(f"runbook configure --profile SITE/good.yaml --set state_dir={tree}", tmp_path / "unused", runs, site)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    record = json.loads(next((runs / "configure").glob("*.json")).read_text())
    assert record["profile"] == "production" and record["site_profile"] == str(site / "good.yaml")
    assert record["parameters"]["max_parallelism"] == 8 and record["parameters"]["log_level"] == "debug"
    toml = next(s for s in record["steps"] if s["name"] == "buildkitd.toml")
    assert toml["status"] == "changed" and "+max-parallelism = 8" in toml["diff"] and '+level = "debug"' in toml["diff"]
    assert not tree.exists()  # check mode wrote nothing


def test_list_takes_a_runbook_either_side(places):
    state, runs, site = places
    for args in ("runbook --list", "runbook --list configure", "runbook configure --list", "runbook -l verify"):
        proc = invoke(args, state, runs, site)
        assert proc.returncode == 0 and "parameter" in proc.stdout, (args, proc.stderr)
        shown = {name for name in ("install", "configure", "verify") if f"runbook {name}" in proc.stdout}
        assert shown == ({"install", "configure", "verify"} if args == "runbook --list" else
                         {"verify"} if "verify" in args else {"configure"}), args

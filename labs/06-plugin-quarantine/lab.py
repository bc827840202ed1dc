"""A broken Docker CLI plugin beside a required one: audited, quarantined (restorable),
the required one kept."""

import shutil
from pathlib import Path

from runbook_checks.core import files
from runbook_checks.plugins.audit import Audit
from runbook_checks.plugins.quarantine import Quarantine
from runbook_checks.labs.catalogue import expect

AREA = 4
START_SECONDS = 8  # lab.start, measured on the kit's machine kind (2 cores, warm)
BUILDER = False  # plugins need no daemon: the quarantine is a directory under the state directory
HERE = Path(__file__).parent
REQUIRED, BROKEN = "hello", "scan"
PROFILE = {"required_plugins": [REQUIRED]}


def plugin_dir(box) -> Path:
    return box.docker_config / "cli-plugins"


def quarantine_dir(box) -> Path:
    return box.layout.quarantine_dir


def setup(box):
    plugin_dir(box).mkdir(parents=True, exist_ok=True)
    for source in sorted((HERE / "plugins").iterdir()):
        shutil.copy2(source, plugin_dir(box) / source.name)


def check(box):
    audit = Audit(box.docker_config, [REQUIRED], 5).scan()
    invalid = [p.name for p in audit.active if not p.valid]
    yield expect(not invalid, f"the audit of {box.docker_config} finds no invalid plugin",
                 f"the audit of {box.docker_config} finds invalid plugins: {', '.join(invalid)}")
    hello = audit.by_name(REQUIRED)
    yield expect(hello and hello.valid, f"docker-{REQUIRED} is there and valid",
                 f"docker-{REQUIRED}, which the team requires, is {'invalid' if hello else 'gone'}")
    want = files.sha256(HERE / "plugins" / f"docker-{BROKEN}")
    kept = [e for e in Quarantine(quarantine_dir(box)).entries()
            if e.name == BROKEN and not e.restored and e.sha256 == want] if quarantine_dir(box).exists() else []
    yield expect(kept, f"docker-{BROKEN} is in the quarantine ({quarantine_dir(box)}), byte for byte, restorable",
                 f"docker-{BROKEN} is not in the quarantine {quarantine_dir(box)}: there is no way back to it")


def solve(box):
    box.must_pass("plugins-clean")


def wrong_fix(box):
    """The broken plugin deleted by hand: the warning goes, and so does the way back."""
    (plugin_dir(box) / f"docker-{BROKEN}").unlink()

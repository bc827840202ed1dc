"""A hand edit of buildkitd.toml that the daemon refuses: back to the kit's config, the
edit kept."""

from runbook_checks.core import files
from runbook_checks.daemon import service
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 1
START_SECONDS = 12  # lab.start, measured on the kit's machine kind (2 cores, warm)
TRIAL = "0:45"  # start to pass, one trial using only the site (2026-11-30)
HAND_EDIT = "# hand edit: four steps at once, as the release team asked\n"


def setup(box):
    """The hand edit (max-parallelism as a word) written and the daemon restarted: it
    refuses the file, again and again, until supervisord gives up."""
    path = box.layout.config_path
    text = path.read_text()
    edited = text.replace("[worker.oci]\n", f"[worker.oci]\n{HAND_EDIT}max-parallelism = \"four\"\n", 1)
    edited = "\n".join(line for line in edited.splitlines()
                       if not (line.startswith("max-parallelism = ") and '"' not in line)) + "\n"
    files.atomic_write(path, edited)
    box.manager.restart()
    checks.supervisor_gives_up(box, "the refused config")


def check(box):
    layout = box.layout
    yield from checks.serving(box)
    yield checks.converged(box, "configure", "the file is the kit's again")
    kept = [p for p in layout.backup_dir.glob(f"{layout.config_path.name}.*") if HAND_EDIT in p.read_text()]
    yield expect(kept, f"the hand-edited file is kept: {kept[0] if kept else ''}",
                 f"the hand-edited file is not in {layout.backup_dir}: its change is lost for the post-mortem")


def solve(box):
    box.must_pass("configure")


def wrong_fix(box):
    """The hand edit removed by hand (the file now as the kit renders it, but nothing
    kept) and the daemon restarted: it serves, and the colleague's change is gone."""
    path = box.layout.config_path
    text = path.read_text().replace(HAND_EDIT, "").replace('max-parallelism = "four"', "max-parallelism = 2")
    files.atomic_write(path, text)
    box.manager.restart()
    service.wait_ready(box.layout, box.manager, 60)

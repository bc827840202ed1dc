"""Moving a builder from one BuildKit version to another with a way back (the upgrade
runbook), from the same source the install runbook uses:

1. stage: the target's buildkitd and buildctl in VERSIONS/TO, and the running ones kept
   in VERSIONS/FROM (the way back), side by side; the live binaries untouched;
2. canary: a throwaway buildkitd of the target version (scratch root, socket, bridge)
   with this builder's configuration builds the canary contexts; the live daemon serves
   on meanwhile. A failed canary stops the run here: nothing was switched;
3. switch: the target's binaries into the builder's bin directory, the daemon restarted
   on them (its configuration is not changed);
4. verify: the daemon says it is the target version and builds the canary contexts.

A switch or verify that fails rolls back: the previous binaries return from VERSIONS/FROM,
the daemon restarts on them and must answer as FROM again; the step fails saying so."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ..core import files
from ..core.errors import BuildctlError, KitError, UpgradeError
from ..core.layout import Layout
from ..core.paths import in_checkout
from ..core.results import Outcome
from . import install
from .buildctl import Buildctl
from .contexts import context_with_base
from .service import free_port, wait_ready
from .throwaway import scratch_config, throwaway

CANARY_DOCKERFILE = "RUN echo canary > /c && cat /c\nRUN test \"$(cat /c)\" = canary\n"


def versions_dir(layout: Layout) -> Path:
    """Where each version's binaries are kept side by side (with the backups)."""
    return layout.backup_dir / "versions"


def plan(layout: Layout, to_version: str) -> Outcome:
    """The version running now and the target."""
    current = install.binary_version(layout.buildkitd)
    if not current:
        raise UpgradeError(f"there is no BuildKit in {layout.bin_dir} to upgrade",
                           "install it first: invoke runbook install --mode apply")
    facts = {"from_version": current, "to_version": to_version}
    if current == to_version:
        return Outcome.ok(f"BuildKit {current} already; nothing to move", **facts)
    return Outcome.changed(f"BuildKit {current} -> {to_version}", **facts)


def stage(layout: Layout, from_version: str, to_version: str, source_used: str, apply: bool, mirror: str = "",
          sha256: str = "", archive_path: str = "") -> Outcome:
    """The target's binaries and the running ones in versions_dir, side by side."""
    if from_version == to_version:
        return Outcome.skipped("nothing to stage")
    back = versions_dir(layout) / from_version
    if not apply:
        return Outcome.changed(f"would stage BuildKit {to_version} in {versions_dir(layout) / to_version} and keep"
                               f" {from_version} in {back}")
    target = dataclasses.replace(layout, bin_dir=versions_dir(layout) / to_version)
    got = install.ensure_binaries(target, to_version, source_used, apply, mirror, sha256, archive_path)
    back.mkdir(parents=True, exist_ok=True)
    for name in install.BINARIES:
        if install.binary_version(back / name) != from_version:
            files.atomic_copy(layout.bin_dir / name, back / name)
    return Outcome.changed(f"{to_version} staged in {target.bin_dir} ({got.message.split(' into ')[0]});"
                           f" {from_version} kept in {back}")


def _contexts(given: list[str], scratch: Path) -> list[Path]:
    """The canary's build contexts: the ones given (directories with a Dockerfile), or
    the kit's own on the local busybox base."""
    if not given:
        return [context_with_base(scratch / "canary", CANARY_DOCKERFILE)]
    out = []
    for item in given:
        path = in_checkout(item)
        if not (path / "Dockerfile").is_file():
            raise UpgradeError(f"canary context {item!r} has no Dockerfile", "give directories with a Dockerfile")
        out.append(path)
    return out


def _build_all(client: Buildctl, contexts: list[Path], what: str) -> list[str]:
    done = []
    for ctx in contexts:
        try:
            result = client.build(ctx, timeout=600)
        except BuildctlError as exc:
            raise UpgradeError(f"{what}: the build of {ctx.name} failed: {exc.problem}", "") from None
        done.append(f"{ctx.name} ({len(result.steps)} steps, {result.seconds:.1f}s)")
    return done


def canary(layout: Layout, from_version: str, to_version: str, given: list[str], apply: bool,
           timeout: float = 60) -> Outcome:
    """A throwaway buildkitd of the target version with this builder's configuration
    (throwaway.scratch_config) builds the canary contexts; the live daemon is not touched."""
    if from_version == to_version:
        return Outcome.skipped("nothing to try")
    if not apply:
        return Outcome.changed(f"would build the canary on a throwaway buildkitd {to_version}")
    binaries = versions_dir(layout) / to_version
    scratch = Path(tempfile.mkdtemp(prefix="bk-canary-", dir="/tmp"))
    try:
        contexts = _contexts(given, scratch)
        config = scratch_config(layout.config_path, scratch, free_port())
        with throwaway(binaries, config, scratch, f"buildkitd {to_version} with this builder's configuration",
                       timeout) as client:
            built = _build_all(client, contexts, f"the canary on BuildKit {to_version}")
    except KitError as exc:
        raise UpgradeError(exc.problem, f"nothing was switched: BuildKit {from_version} still serves; stay on it,"
                                        f" or fix what the canary says and run again") from None
    return Outcome.changed(f"a throwaway buildkitd {to_version} with this builder's configuration built "
                           f"{', '.join(built)}; the live daemon served on meanwhile")


def serving(layout: Layout) -> str:
    """The version the running daemon reports (`buildctl debug info`)."""
    return (Buildctl.for_layout(layout).info().get("buildkitVersion") or {}).get("version", "")


def _use(layout: Layout, version: str) -> None:
    for name in install.BINARIES:
        files.atomic_copy(versions_dir(layout) / version / name, layout.bin_dir / name)


def rollback(layout: Layout, manager, from_version: str, why: str, timeout: float = 60) -> None:
    """The previous binaries back, the daemon restarted on them and answering as
    `from_version`; then fail, saying why."""
    _use(layout, from_version)
    manager.reload_conf()
    manager.restart()
    wait_ready(layout, manager, timeout)
    now = serving(layout)
    if now != from_version:
        raise UpgradeError(f"{why}; the rollback restored {from_version}'s binaries, and the daemon says {now!r}",
                           f"look at it now: its log, and {versions_dir(layout)}")
    raise UpgradeError(f"{why}; rolled back: BuildKit {from_version} serves again",
                       "the target stays staged beside it; fix what failed and run again")


def switch(layout: Layout, manager, from_version: str, to_version: str, apply: bool, timeout: float = 60) -> Outcome:
    """The target's binaries into the bin directory, the daemon restarted on them."""
    if from_version == to_version:
        return Outcome.skipped("nothing to switch")
    if manager is None:
        return Outcome.skipped(f"rendered under {layout.state_dir}: the daemon runs on the build server, not here")
    if not apply:
        return Outcome.changed(f"would switch {layout.bin_dir} to {to_version} and restart the daemon")
    _use(layout, to_version)
    try:
        manager.reload_conf()
        manager.restart()
        wait_ready(layout, manager, timeout)
    except KitError as exc:
        rollback(layout, manager, from_version, f"buildkitd {to_version} did not come up: {exc.problem}", timeout)
    return Outcome.changed(f"{layout.bin_dir} holds {to_version}; the daemon restarted on it")


def verify(layout: Layout, manager, from_version: str, to_version: str, given: list[str], apply: bool,
           timeout: float = 60) -> Outcome:
    """The daemon says it is the target version and builds the canary contexts; else
    roll back."""
    if from_version == to_version or manager is None:
        return Outcome.skipped("nothing switched")
    if not apply:
        return Outcome.changed(f"would check that the daemon says {to_version} and builds the canary")
    with tempfile.TemporaryDirectory(prefix="bk-verify-") as tmp:
        try:
            now = serving(layout)
            if now != to_version:
                raise UpgradeError(f"the daemon says it is {now or 'nothing'}, not {to_version}", "")
            built = _build_all(Buildctl.for_layout(layout), _contexts(given, Path(tmp)),
                               f"verify on BuildKit {to_version}")
        except KitError as exc:
            rollback(layout, manager, from_version, exc.problem, timeout)
    return Outcome.changed(f"BuildKit {to_version} serves {layout.address} and built {', '.join(built)}",
                           buildkit_version=to_version)

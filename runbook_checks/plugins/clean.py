"""The plugins-clean runbook's steps after the audit's: move invalid (or, asked for, unwanted)
plugins into the quarantine, prune config.json of directories that no longer exist (with
a backup), and check that docker is stable afterwards."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import files
from ..core.errors import PluginError
from ..core.results import Outcome
from .audit import Audit
from .discovery import Plugin
from .oracle import compare, docker_plugin_warnings, docker_verdicts
from .quarantine import Quarantine, count, resolve_dir


@dataclass
class Move:
    plugin: Plugin
    reason: str


@dataclass
class Cleanup:
    """The plugins-clean steps after the audit's: quarantine, config.json, stability."""

    audit: Audit
    directory: Path
    backup_dir: Path
    clean_not_required: bool
    apply: bool
    moves: list[Move] = field(default_factory=list)
    config_change: tuple[str, str] | None = None  # (old text, new text)

    @classmethod
    def from_session(cls, rb, audit: Audit) -> "Cleanup":
        return cls(audit, resolve_dir(rb.params.quarantine_dir, rb.layout), rb.layout.backup_dir,
                   rb.params.clean_not_required, rb.apply)

    def plan(self) -> list[Move]:
        """Invalid candidates (shadowed ones too: they become active when the winner goes),
        and with clean_not_required the valid plugins no profile asked for."""
        moves = []
        for p in self.audit.plugins:
            if not p.valid:
                moves.append(Move(p, f"invalid: {p.error}"))
            elif self.clean_not_required and p.required == "not required":
                moves.append(Move(p, "not required (clean_not_required)"))
        return moves

    def _check_directory(self) -> None:
        here = os.path.realpath(self.directory)
        for d in self.audit.dirs:
            if os.path.realpath(d.path) == here:
                raise PluginError(f"quarantine_dir {self.directory} is a plugin directory docker searches",
                                  "choose a quarantine_dir outside docker's search path")

    def quarantine(self) -> Outcome:
        """Step: move what the plan names into the quarantine (check: say what would move)."""
        self._check_directory()
        self.moves = self.plan()
        if not self.moves:
            return Outcome.ok(f"nothing to quarantine: {len(self.audit.plugins)} candidates, all kept",
                              quarantine_dir=str(self.directory), quarantined=[])
        diff = "".join(f"- {m.plugin.path}\n+ {self.directory}/{Path(m.plugin.path).name}   # {m.reason}\n"
                       for m in self.moves)
        if not self.apply:
            return Outcome.changed(f"would move {count(len(self.moves), 'plugin', 'plugins')} to {self.directory}",
                                   diff, quarantine_dir=str(self.directory),
                                   would_quarantine=[m.plugin.path for m in self.moves])
        blocked = [m.plugin.path for m in self.moves if not os.access(Path(m.plugin.path).parent, os.W_OK | os.X_OK)]
        if blocked:
            raise PluginError(f"uid {os.geteuid()} may not move {', '.join(blocked)} (their directory is not"
                              " writable); nothing was moved", "run plugins-clean as the directory's owner (root for"
                              " the system directories)")
        files.writable_dir(self.directory)
        quarantine = Quarantine(self.directory)
        quarantine.entries()  # refuse before moving anything if the manifest is unreadable
        done = []
        for m in self.moves:
            try:
                done.append(quarantine.put(Path(m.plugin.path), m.plugin.name, m.reason))
            except (OSError, PluginError) as exc:
                moved = "".join(f"\n  {e.original_path} -> {self.directory / e.stored}" for e in done) or " nothing"
                raise PluginError(f"could not quarantine {m.plugin.path}: {exc}\nmoved before it (recorded in"
                                  f" {quarantine.manifest}):{moved}",
                                  "fix the cause and run plugins-clean again (what moved stays in quarantine;"
                                  " `invoke plugins.restore NAME` puts it back)") from None
        lines = [f"{e.original_path} -> {self.directory / e.stored} ({e.moved_by})" for e in done]
        return Outcome.changed(f"moved {count(len(done), 'plugin', 'plugins')} to {self.directory}"
                               f" (manifest: {quarantine.manifest})\n" + "\n".join(lines), diff,
                               quarantine_dir=str(self.directory),
                               quarantined=[asdict(e) for e in done])

    def prune_config(self) -> Outcome:
        """Step: drop cliPluginsExtraDirs entries whose directory no longer exists (backup first)."""
        cfg = self.audit.config
        if cfg is None or not cfg.exists:
            return Outcome.ok(f"no {self.audit.config_dir / 'config.json'}: nothing to prune")
        if cfg.error:
            raise PluginError(f"{cfg.error}; it is reported, never rewritten",
                              f"correct {cfg.path} by hand (docker ignores all of it until then), then run again")
        gone = [d for d in cfg.extra_dirs if not os.path.exists(d)]
        if not gone:
            return Outcome.ok(f"{cfg.path}: every cliPluginsExtraDirs entry exists ({len(cfg.extra_dirs)})")
        data = dict(cfg.data)
        kept = [d for d in cfg.extra_dirs if d not in gone]
        if kept:
            data["cliPluginsExtraDirs"] = kept
        else:
            del data["cliPluginsExtraDirs"]
        new = json.dumps(data, indent="\t", ensure_ascii=False) + "\n"  # docker writes it tab-indented
        # the diff shows only the key that changes: config.json also holds registry credentials
        # (auths), which must never reach a run record
        diff = files.unified_diff(json.dumps({"cliPluginsExtraDirs": cfg.extra_dirs}, indent="\t") + "\n",
                                  json.dumps({"cliPluginsExtraDirs": kept}, indent="\t") + "\n", cfg.path)
        what = f"{count(len(gone), 'missing directory', 'missing directories')} from {cfg.path}: {', '.join(gone)}"
        if not self.apply:
            return Outcome.changed(f"would remove {what}", diff)
        st = os.stat(cfg.path)
        backup = files.backup(cfg.path, self.backup_dir)
        files.atomic_write(cfg.path, new, mode=stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(cfg.path, st.st_uid, st.st_gid)
        return Outcome.changed(f"removed {what}; backup {backup}", diff, config_backup=str(backup))

    def stability(self) -> Outcome:
        """Step: after the change, docker prints no plugin warning and every required plugin
        that answered its metadata command before still does. One that was already missing
        or broken is named, not failed: the audit reports it and plugins-configure fixes
        it. Skipped in check mode while something would change."""
        if not self.apply and (self.moves or self._config_would_change()):
            return Outcome.skipped("check mode: nothing was moved; apply runs this check on the result")
        after = Audit(self.audit.config_dir, self.audit.required, self.audit.timeout).scan()
        problems = []
        docker = self.audit.docker.get("binary")
        if docker:
            problems += [f"docker still warns: {w}" for w in docker_plugin_warnings(docker, after.env)]
            problems += [f"the kit and docker disagree: {d}"
                         for d in compare(after.plugins, after.ignored, docker_verdicts(docker, after.env))]
        answering, absent = [], []
        for name in after.required:
            before, now = self.audit.by_name(name), after.by_name(name)
            if now is not None and now.valid:
                meta = now.metadata or {}
                answering.append(f"{name} ({meta.get('Vendor')} {meta.get('Version', '')}".strip() + ")")
            elif before is not None and before.valid:
                problems.append(f"required plugin {name} answered before the clean and does not now"
                                f" ({now.error if now else 'gone'}); fix: invoke plugins.restore {name}")
            else:
                was = f"invalid ({before.error})" if before else "missing"
                absent.append(f"{name} ({was} before the clean too)")
        if problems:
            raise PluginError("not stable after cleaning:\n  " + "\n  ".join(problems),
                              "apply the fix named for each; `invoke plugins.restore NAME` puts a quarantined"
                              " plugin back")
        said = "docker info prints no plugin warning" if docker else "docker is not on PATH (no warning check)"
        message = f"{said}; required plugins answer: {', '.join(answering) or 'none'}"
        if absent:
            message += (f"\nnot working, as before: {', '.join(absent)}; fix: invoke runbook plugins-configure"
                        " --mode apply")
        return Outcome.ok(message, inventory_after=after.inventory(),
                          required_not_working=[a.split(" ")[0] for a in absent])

    def _config_would_change(self) -> bool:
        cfg = self.audit.config
        return bool(cfg and cfg.exists and not cfg.error and any(not os.path.exists(d) for d in cfg.extra_dirs))

"""Docker CLI plugin audit: find every candidate the Docker CLI would consider, judge it
by the CLI's own rules, inventory it, and check the verdicts against `docker` itself.

What the Docker CLI (v28) does, measured on docker 28.2.2 and read in docker/cli
`cli-plugins/manager` (manager.go, plugin.go, candidate.go):

* Directories, in order: each `cliPluginsExtraDirs` entry of $DOCKER_CONFIG/config.json,
  then $DOCKER_CONFIG/cli-plugins (default ~/.docker/cli-plugins), then the system
  directories below. A directory that is missing, not a directory or unreadable is
  skipped silently. A config.json that does not parse is ignored as a whole (docker
  warns "Error parsing config file" and uses its defaults, so no extra directories).
* Candidates: entries named `docker-*` that are regular files or symlinks (to anything);
  directories, fifos and sockets are ignored without a word.
* The first candidate of a name wins; the later ones are its ShadowedPaths and are never
  run or judged.
* Judging the winner, first failure wins: the name must match ^[a-z][a-z0-9]*$; it must
  not be a builtin command or an alias of one; `PATH docker-cli-plugin-metadata` must run
  and exit 0 (no timeout: a plugin that hangs hangs `docker info`); its stdout must be a
  JSON object (Go's encoding/json: keys match fields case-insensitively, later keys
  win, null leaves a field empty, a wrong type is an error); SchemaVersion must be
  exactly "0.1.0"; Vendor must not be empty.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core import files
from ..core.errors import PluginError
from ..core.paths import runs_dir
from ..core.results import Outcome
from .discovery import (ConfigFile, Ignored, Mount, Plugin, SearchDir, config_dir, group_name, last_use, mount_of,
                        mounts, read_config, search_path, security_findings, user_name)
from .metadata import KNOWN_PLUGINS, NAME_PREFIX, judge_metadata, judge_name, run_metadata
from .oracle import compare, docker_verdicts


# --------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------
@dataclass
class Audit:
    """One audit of one DOCKER_CONFIG. The step methods fill it in, in runbook order."""

    config_dir: Path
    required: list[str]
    timeout: float
    config: ConfigFile | None = None
    dirs: list[SearchDir] = field(default_factory=list)
    plugins: list[Plugin] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    docker: dict[str, Any] = field(default_factory=dict)
    inventory_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params) -> "Audit":
        return cls(config_dir(params.docker_config), list(params.required_plugins), params.plugin_timeout)

    @property
    def env(self) -> dict[str, str]:
        """The environment docker and the plugins run in: ours, with this DOCKER_CONFIG."""
        return dict(os.environ, DOCKER_CONFIG=str(self.config_dir))

    # -- reading the host ---------------------------------------------------------------
    def scan(self) -> "Audit":
        """Everything, without the runbook: search path, candidates, verdicts."""
        self.search()
        self.inspect()
        return self

    def search(self) -> Outcome:
        """Step: the directories docker searches, in order, and what each holds."""
        self.config = read_config(self.config_dir)
        self.dirs = search_path(self.config_dir, self.config)
        for d in self.dirs:
            try:
                st = os.stat(d.path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                d.state = "not a directory"
            elif not os.access(d.path, os.R_OK | os.X_OK):
                d.state = "unreadable"
            else:
                d.state = "ok"
        lines = [f"{i}. {d.path} ({d.origin}): {d.state}" for i, d in enumerate(self.dirs, 1)]
        if self.config.error:
            lines.append(f"config.json ignored, as docker ignores it: {self.config.error}")
        present = sum(d.state == "ok" for d in self.dirs)
        return Outcome.ok(f"DOCKER_CONFIG={self.config_dir}: {present} of {len(self.dirs)} plugin directories"
                          " exist\n" + "\n".join(lines),
                          docker_config=str(self.config_dir),
                          plugin_dirs=[asdict(d) for d in self.dirs],
                          docker_config_json_error=self.config.error)

    def inspect(self) -> Outcome:
        """Step: every candidate, its verdict, metadata, owner, mode, hash, last use."""
        if self.config is None:
            self.search()
        self.plugins, self.ignored = [], []
        table = mounts()
        me = os.geteuid()
        first: dict[str, Plugin] = {}
        for d in self.dirs:
            if d.state != "ok":
                continue
            try:
                entries = sorted(os.scandir(d.path), key=lambda e: e.name)
            except OSError as exc:
                d.state = f"unreadable ({exc.strerror})"
                continue
            dir_st = os.stat(d.path)
            for entry in entries:
                if not entry.name.startswith(NAME_PREFIX):
                    continue
                if not (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                    self.ignored.append(Ignored(entry.path, "not a regular file or symlink: docker ignores it"))
                    continue
                d.candidates += 1
                plugin = self._describe(entry.path, d.path, dir_st, me, table)
                if plugin.name in first:
                    plugin.shadowed_by = first[plugin.name].path
                    first[plugin.name].shadows.append(plugin.path)
                else:
                    first[plugin.name] = plugin
                self.plugins.append(plugin)
        self._judge_all()
        return Outcome.ok(self.summary(), **self.facts())

    def _describe(self, path: str, directory: str, dir_st: os.stat_result, me: int, table: list[Mount]) -> Plugin:
        """Name, file facts and last use; read before any process touches the file."""
        lst = os.lstat(path)
        is_link = stat.S_ISLNK(lst.st_mode)
        plugin = Plugin(name=os.path.basename(path)[len(NAME_PREFIX):], path=path, directory=directory,
                        kind="symlink" if is_link else "file", link_target=os.readlink(path) if is_link else None)
        try:
            st = os.stat(path)  # what docker would run: the link's target
        except OSError as exc:
            plugin.notes.append(f"symlink to {plugin.link_target}, which does not resolve ({exc.strerror})")
            st = None
        target = st or lst
        plugin.uid, plugin.gid = target.st_uid, target.st_gid
        plugin.owner, plugin.group = user_name(target.st_uid), group_name(target.st_gid)
        plugin.mode = f"{stat.S_IMODE(target.st_mode):04o}"
        plugin.insecure = security_findings(path, st, dir_st, me)
        if st is not None and not stat.S_ISREG(st.st_mode):
            plugin.notes.append("its target is not a regular file")
        if st is not None and stat.S_ISREG(st.st_mode):
            plugin.size = st.st_size
            try:
                plugin.sha256 = files.sha256(path)
            except OSError as exc:
                plugin.notes.append(f"cannot read it to hash it: {exc.strerror}")
            plugin.last_use, plugin.last_use_note = last_use(st, mount_of(path, table))
        plugin.required = "required" if plugin.name in self.required else "not required"
        purpose, status = KNOWN_PLUGINS.get(plugin.name, ("", "unknown"))
        plugin.status = status
        plugin.purpose = purpose
        return plugin

    def _judge_all(self) -> None:
        env = self.env
        to_run = []
        for plugin in self.plugins:
            plugin.reason, plugin.error = judge_name(plugin.name)
            if not plugin.reason:
                to_run.append(plugin)
        if to_run:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(to_run))) as pool:
                results = list(pool.map(lambda p: run_metadata(p.path, self.timeout, env), to_run))
            for plugin, (raw, run_reason, run_error, seconds) in zip(to_run, results):
                plugin.metadata_seconds = seconds
                plugin.reason, plugin.error, plugin.metadata = judge_metadata(raw, run_reason, run_error)
        for plugin in self.plugins:
            plugin.valid = not plugin.reason
            plugin.description = (plugin.metadata or {}).get("ShortDescription", "")
            if plugin.purpose and plugin.description:
                plugin.purpose = f"{plugin.purpose} (it says: {plugin.description})"
            elif not plugin.purpose:
                plugin.purpose = plugin.description or "unknown: not in the kit's table and no description"

    # -- reading the results -------------------------------------------------------------
    @property
    def active(self) -> list[Plugin]:
        return [p for p in self.plugins if p.active]

    @property
    def invalid(self) -> list[Plugin]:
        return [p for p in self.plugins if not p.valid]

    @property
    def insecure(self) -> list[Plugin]:
        return [p for p in self.plugins if p.insecure]

    def by_name(self, name: str) -> Plugin | None:
        return next((p for p in self.active if p.name == name), None)

    def inventory(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.plugins]

    def facts(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory(),
            "plugins_ignored": [asdict(i) for i in self.ignored],
            "plugins_total": len(self.plugins),
            "plugins_active": len(self.active),
            "plugins_invalid": len(self.invalid),
            "plugins_insecure": len(self.insecure),
            "plugins_shadowed": len(self.plugins) - len(self.active),
        }

    def summary(self) -> str:
        if not self.plugins:
            return "no plugin candidates" + (f"; {len(self.ignored)} entries ignored" if self.ignored else "")
        shadowed = [p for p in self.plugins if not p.active]
        active_invalid = sum(not p.valid for p in self.active)
        shadowed_invalid = sum(not p.valid for p in shadowed)
        head = (f"{len(self.plugins)} candidates: {len(self.active) - active_invalid} valid,"
                f" {active_invalid} invalid, {len(shadowed)} shadowed"
                + (f" ({shadowed_invalid} of them invalid)" if shadowed_invalid else "")
                + f", {len(self.insecure)} insecure")
        lines = [head]
        for p in self.plugins:
            verdict = "valid" if p.valid else f"INVALID: {p.error}"
            extra = f" (shadowed by {p.shadowed_by})" if p.shadowed_by else ""
            lines.append(f"  {p.name or repr(p.name)} at {p.path}: {verdict}{extra}")
        for i in self.ignored:
            lines.append(f"  ignored: {i.path}: {i.why}")
        return "\n".join(lines)

    # -- the oracle ---------------------------------------------------------------------
    def compare_with_docker(self) -> Outcome:
        """Step: docker's own verdicts (`docker info`) must equal the kit's, path by path."""
        docker = shutil.which("docker")
        if not docker:
            return Outcome.skipped("docker is not on PATH: the verdicts are the kit's alone")
        listed = docker_verdicts(docker, self.env)
        self.docker = {"binary": docker, "plugins": listed}
        disagreements = compare(self.plugins, self.ignored, listed)
        if disagreements:
            raise PluginError("the kit and the Docker CLI disagree:\n  " + "\n  ".join(disagreements),
                              "docker's verdict is the truth: report this with the inventory (a rule in"
                              " runbook_checks/plugins.py is out of date for this docker); nothing was changed")
        return Outcome.ok(f"{docker} agrees on all {len(self.plugins)} candidates", **self.facts())

    # -- inventory files ----------------------------------------------------------------
    def write_inventory(self, folder: Path) -> Outcome:
        """Step: the inventory as JSON and as a Markdown table, a record beside the run's."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = files.stamp()
        json_path, md_path = folder / f"{stamp}.json", folder / f"{stamp}.md"
        json_path.write_text(json.dumps(self.document(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        self.inventory_paths = {"inventory_json": str(json_path), "inventory_markdown": str(md_path)}
        return Outcome.ok(f"{json_path}\n{md_path}", **self.inventory_paths)

    def document(self) -> dict[str, Any]:
        return {
            "docker_config": str(self.config_dir),
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "required_plugins": self.required,
            "search_path": [asdict(d) for d in self.dirs],
            "config_json_error": self.config.error if self.config else "",
            "docker": self.docker.get("binary"),
            "plugins": self.inventory(),
            "ignored": [asdict(i) for i in self.ignored],
        }

    def markdown(self) -> str:
        rows = ["| name | verdict | required | purpose | path | shadowed by | owner | mode | findings | last use |"
                " size | sha256 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in self.plugins:
            verdict = "valid" if p.valid else f"**invalid**: {p.error}"
            rows.append("| " + " | ".join(_md(x) for x in (
                f"`{p.name}`", verdict, p.required, p.purpose, f"`{p.path}`", p.shadowed_by or "",
                f"{p.owner}:{p.group}", p.mode, "; ".join(p.insecure + p.notes),
                p.last_use or p.last_use_note.split(";")[0] or "not known",
                "" if p.size is None else str(p.size), (p.sha256 or "")[:12])) + " |")
        lines = [f"# Docker CLI plugins: {self.config_dir}", "",
                 f"{len(self.plugins)} candidates, {len(self.invalid)} invalid, {len(self.insecure)} insecure.", "",
                 "Search path, in docker's order:", ""]
        lines += [f"{i}. `{d.path}` ({d.origin}): {d.state}" for i, d in enumerate(self.dirs, 1)]
        lines += ["", *rows, ""]
        if self.ignored:
            lines += ["Ignored by docker:", ""] + [f"- `{i.path}`: {i.why}" for i in self.ignored] + [""]
        return "\n".join(lines)

    # -- judgement ------------------------------------------------------------------------
    def usage(self) -> Outcome:
        """Step: which plugins nobody asked for, and when each was last run (where known)."""
        extra = [p for p in self.active if p.required == "not required"]
        lines = [f"  {p.name}: {p.purpose}; last use {p.last_use or 'not known'} ({p.last_use_note or 'no file'})"
                 for p in extra]
        for p in self.plugins:
            if p.shadowed_by and p.valid:
                lines.append(f"  {p.path}: a valid copy docker never runs (shadowed by {p.shadowed_by})")
        head = (f"{len(extra)} not required (required: {', '.join(self.required) or 'none'})" if extra
                else f"every plugin is required (required: {', '.join(self.required) or 'none'})")
        return Outcome.ok("\n".join([head, *lines]),
                          plugins_not_required=[p.name for p in extra])

    def findings(self) -> list[str]:
        """Everything an operator should act on, each with its fix."""
        found = []
        for p in self.invalid:
            where = "" if p.active else f" (shadowed by {p.shadowed_by}; active if that one goes)"
            found.append(f"invalid: {p.path}{where}: {p.error}; fix: {p.fix}")
        for p in self.plugins:
            found += [f"insecure: {p.path}: {finding}" for finding in p.insecure]
        for name in self.required:
            plugin = self.by_name(name)
            if plugin is None:
                found.append(f"required plugin {name} is missing; fix: install it"
                             " (invoke runbook plugins-configure --mode apply)")
            elif not plugin.valid:
                found.append(f"required plugin {name} is invalid ({plugin.error}); fix: reinstall it"
                             " (invoke runbook plugins-configure --mode apply)")
        if self.config and self.config.error:
            found.append(f"config.json: {self.config.error}; docker ignores the whole file. fix: correct it by"
                         " hand (the kit never rewrites a file it cannot read)")
        for d in self.dirs:
            if d.origin == "cliPluginsExtraDirs" and d.state == "missing":
                found.append(f"config.json lists {d.path}, which does not exist; fix: plugins-clean removes the"
                             " entry (with a backup of config.json)")
            elif d.state.startswith("unreadable") or (d.state == "not a directory" and d.origin != "system"):
                found.append(f"plugin directory {d.path} is {d.state}: docker skips it silently; fix: make it a"
                             " readable directory or remove it from cliPluginsExtraDirs")
        return found

    def verdict(self) -> Outcome:
        """Step: fails when anything needs attention, listing each finding with its fix."""
        found = self.findings()
        if found:
            raise PluginError(f"{len(found)} findings:\n  " + "\n  ".join(found),
                              "apply each fix above; invoke runbook plugins-clean --mode apply quarantines the"
                              " invalid plugins and prunes config.json")
        return Outcome.ok(f"{len(self.active)} plugins valid and safe; required present:"
                          f" {', '.join(self.required) or 'none'}")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def inventory_dir() -> Path:
    """runs/plugins-audit/inventory/: beside the audit's run records, out of their *.json glob."""
    return runs_dir() / "plugins-audit" / "inventory"

"""The deny-list gate: an image whose SBOM names a package the operator denies does not
pass (and is not pushed). The deny list is a YAML file the operator maintains:

    - package: busybox        # a package name, or a glob (fnmatch) over names
      versions: "1.35.*"      # optional: a glob over versions; absent: every version
      reason: why it is denied (shown in the refusal)

Matching is by the name and version the SBOM records, nothing more: the gate knows the
packages it is told about, it does not know vulnerabilities (see the scanning page for
plugging in a vulnerability database where one is reachable)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import ScanError
from ..core.paths import in_checkout
from ..core.results import Outcome
from . import sbom

EXAMPLE = "docs/examples/deny-list.yaml"


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str = Field(min_length=1)
    versions: str = "*"
    reason: str = Field(min_length=1)

    def matches(self, pkg: dict[str, str]) -> bool:
        return fnmatch.fnmatchcase(pkg["name"], self.package) and fnmatch.fnmatchcase(pkg["version"] or "", self.versions)


def load(path: str | Path) -> list[Rule]:
    """The rules (the file absolute, or relative to the checkout), or a refusal naming
    the file, the entry and what to write."""
    path = in_checkout(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ScanError(f"the deny list {path} does not exist", f"give its path, or copy {EXAMPLE}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScanError(f"{path}{f':{mark.line + 1}' if mark else ''} is not YAML: {getattr(exc, 'problem', exc)}",
                        f"write it like {EXAMPLE}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ScanError(f"{path} is not a list of rules", f"write it like {EXAMPLE}: - package: NAME, reason: WHY")
    rules = []
    for number, entry in enumerate(doc, 1):
        try:
            rules.append(Rule.model_validate(entry))
        except ValidationError as exc:
            said = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'the entry'}: {e['msg']}" for e in exc.errors())
            raise ScanError(f"{path}: entry {number}: {said}",
                            f"each entry needs package and reason, and may have versions (like {EXAMPLE})") from None
    return rules


def check(sbom_path: str, deny_list: str) -> Outcome:
    """ok when no package of the SBOM (a file build_and_attest kept) matches a rule; a
    ScanError naming each match otherwise."""
    if not sbom_path:
        return Outcome.skipped("no SBOM to check (the build runs with mode=apply)")
    doc = json.loads(Path(sbom_path).read_text())
    pkgs = [p for d in (doc if isinstance(doc, list) else [doc]) for p in sbom.packages(d)]
    if not deny_list:
        return Outcome.skipped(f"no deny list (deny_list is empty): {len(pkgs)} package(s) not checked")
    rules = load(deny_list)
    hits = [(pkg, rule) for pkg in pkgs for rule in rules if rule.matches(pkg)]
    if hits:
        raise ScanError("the image holds denied packages:\n" + "\n".join(
            f"  {pkg['name']} {pkg['version']} (denied by {rule.package} {rule.versions}: {rule.reason})"
            for pkg, rule in hits), f"rebuild without them, or change the deny list {deny_list} if the rule is wrong")
    return Outcome.ok(f"{len(pkgs)} package(s), none on the deny list ({len(rules)} rule(s) in {deny_list})",
                      denied=[])


def inputs(scan_context: str, deny_list: str, source_policy: str) -> Outcome:
    """Everything the operator gave, checked before anything is built: the context and
    its Dockerfile, the deny list, the source policy. Fact: context."""
    from ..daemon import sourcepolicy
    from .lint import context_dir

    context = context_dir(scan_context)
    said = [f"context {context}"]
    if deny_list:
        said.append(f"deny list {deny_list} ({len(load(deny_list))} rule(s))")
    if source_policy:
        said.append(f"source policy {source_policy} ({sourcepolicy.summary(sourcepolicy.load(source_policy))})")
    return Outcome.ok("; ".join(said), context=str(context))

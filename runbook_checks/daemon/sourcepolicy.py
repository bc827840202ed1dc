"""BuildKit source policies: the JSON file `buildctl build --source-policy-file` reads
(docs/build-repro.md upstream) to deny, allow or pin (convert) the sources a build names,
base images first. The client sends the policy with its build request; buildkitd applies
what it is sent and has no policy of its own, so a client that sends none is not bound by
it (the security model page says so). The kit checks a policy file before anything uses
it, with buildctl's own reading rules: upper-case action and match-type words,
`match_type` with an underscore (buildctl's JSON decoder ignores `matchType`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.paths import in_checkout

ACTIONS = ("ALLOW", "DENY", "CONVERT")
MATCH_TYPES = ("WILDCARD", "EXACT", "REGEX")
SCHEMES = ("docker-image://", "git://", "https://", "http://", "local://", "oci-layout://")
FIX = ("write it like the example in docs/examples/source-policy.json (BuildKit's format: "
       '{"rules": [{"action": "DENY", "selector": {"identifier": "docker-image://docker.io/*"}}]})')


def _refuse(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {where}{problem}", FIX)


def check(doc: Any, path: Path) -> list[dict]:
    """The policy's rules, or a refusal naming the rule and what is wrong with it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list) or not doc["rules"]:
        raise _refuse(path, "", "is not a source policy: it needs a non-empty \"rules\" list")
    unknown = set(doc) - {"version", "rules"}
    if unknown:
        raise _refuse(path, "", f"has keys buildctl ignores: {', '.join(sorted(unknown))}")
    for number, rule in enumerate(doc["rules"], 1):
        where = f"rule {number}: "
        if not isinstance(rule, dict):
            raise _refuse(path, where, "is not an object")
        extra = set(rule) - {"action", "selector", "updates"}
        if extra:
            raise _refuse(path, where, f"has keys buildctl ignores: {', '.join(sorted(extra))}")
        if rule.get("action") not in ACTIONS:
            raise _refuse(path, where, f"action {rule.get('action')!r} is not one of {', '.join(ACTIONS)}")
        selector = rule.get("selector")
        if not isinstance(selector, dict) or not isinstance(selector.get("identifier"), str):
            raise _refuse(path, where, "needs a selector with an identifier")
        if "matchType" in selector:
            raise _refuse(path, where, "says matchType, which buildctl ignores: write match_type")
        if selector.get("match_type", "WILDCARD") not in MATCH_TYPES:
            raise _refuse(path, where, f"match_type {selector['match_type']!r} is not one of {', '.join(MATCH_TYPES)}")
        if not selector["identifier"].startswith(SCHEMES):
            raise _refuse(path, where, f"identifier {selector['identifier']!r} names no source type"
                                       f" ({', '.join(SCHEMES)})")
        if rule["action"] == "CONVERT" and not isinstance(rule.get("updates"), dict):
            raise _refuse(path, where, "CONVERT needs updates (the identifier or attrs to use instead)")
        if rule["action"] != "CONVERT" and "updates" in rule:
            raise _refuse(path, where, f"{rule['action']} takes no updates (only CONVERT does)")
    return doc["rules"]


def load(path: str | Path) -> list[dict]:
    """Read and check a policy file (absolute, or relative to the checkout; see `check`)."""
    path = in_checkout(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"the source policy {path} does not exist", "give the path of a policy file, or none")
    except ValueError as exc:
        raise _refuse(path, "", f"is not JSON: {exc}") from None
    return check(doc, path)


def summary(rules: list[dict]) -> str:
    counts = {a: sum(1 for r in rules if r["action"] == a) for a in ACTIONS}
    return ", ".join(f"{n} {a.lower()}" for a, n in counts.items() if n)

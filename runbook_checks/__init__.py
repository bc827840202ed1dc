"""buildkit-ops: the library behind the runbooks.

Every runbook cell calls into this package; every branch here is reachable from a
test. Modules are flat and have one job each (see docs/reference/architecture.md).
"""

BUILDKIT_VERSION = "v0.34.2"
"""The one place the BuildKit version is pinned: the newest stable release the Go
module proxy serves. Runbooks take `buildkit_version` to override it."""

__all__ = ["BUILDKIT_VERSION"]

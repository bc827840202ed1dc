"""buildkit-ops: the library behind the runbooks.

Every runbook cell calls into this package; every branch here is reachable from a test.
Packages by domain, in layers (docs/reference/architecture.md): `core` imports nothing
above it, `daemon` only `core`; the domains (`cache`, `monitoring`, `plugins`) import
`daemon` and `core` and never each other; `session` is where they meet for a runbook.
"""

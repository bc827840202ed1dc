"""`invoke scan.scanner`: the kit's SBOM scanner image, pushed where production builders
pull it from (their profile's sbom_scanner). The scan itself is a runbook:
`invoke runbook scan`."""

from __future__ import annotations

from invoke import task

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import ParameterError
from runbook_checks.core.params import IMAGE_REF
from runbook_checks.scanning import sbom

from ._kit import console, refusals


@task(help={"push": "where to push it: HOST[:PORT]/PATH[:TAG] in a registry your builders reach",
            "state_dir": "the lab whose buildkitd builds it (default: the lab's)"})
@refusals
def scanner(c, push, state_dir=""):
    """Build the kit's SBOM scanner (syft and BuildKit's generator protocol) on the lab's
    builder and push it; set the production profile's sbom_scanner to what it prints."""
    if not IMAGE_REF.match(push):
        raise ParameterError(f"--push {push!r} is not an image reference with a registry host",
                             "write it as HOST[:PORT]/PATH[:TAG], for example registry.example:5000/tools/sbom-scanner:1")
    layout = layout_mod.for_params({"profile": "lab", "state_dir": state_dir})
    digest = sbom.push_scanner(layout, push)
    console().print(f"pushed {push} {digest}\nset it in the production profile: sbom_scanner: {push}", highlight=False)

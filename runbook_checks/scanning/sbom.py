"""An SBOM for each image, attested by the build itself: BuildKit runs a scanner image on
the image's root filesystem (its SBOM generator protocol, docs/attestations/sbom-protocol.md
upstream) and stores the SPDX document beside the image as an in-toto attestation. No
scanner image can be pulled here, so the kit makes one: syft built from the Go module
proxy (once per version, cached outside the checkout), busybox, and a protocol script."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..core import files
from ..core.errors import ScanError
from ..core.layout import Layout
from ..core.results import Outcome
from ..cache import images
from ..daemon import install
from ..daemon.buildctl import Buildctl, BuildResult
from ..daemon.contexts import busybox_rootfs

SYFT_MODULE = "github.com/anchore/syft"
SYFT_VERSION = "v1.57.1"
SCANNER_REPOSITORY = "kit/sbom-scanner"
SPDX = "https://spdx.dev/Document"

# BuildKit mounts the image's root at $BUILDKIT_SCAN_SOURCE (other stages under
# $BUILDKIT_SCAN_SOURCE_EXTRAS) and reads one in-toto statement per file it finds in
# $BUILDKIT_SCAN_DESTINATION; syft writes SPDX JSON, the script wraps it.
SCAN_SCRIPT = """#!/bin/sh
set -eu
scan() {
  syft scan "dir:$1" --quiet --output "spdx-json=/tmp/$2.spdx"
  { printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"%s","subject":[],"predicate":' "$SPDX"
    cat "/tmp/$2.spdx"
    printf '}\\n'
  } > "$BUILDKIT_SCAN_DESTINATION/$2.spdx.json"
}
scan "$BUILDKIT_SCAN_SOURCE" "$(basename "$BUILDKIT_SCAN_SOURCE")"
if [ -n "${BUILDKIT_SCAN_SOURCE_EXTRAS:-}" ] && [ -d "$BUILDKIT_SCAN_SOURCE_EXTRAS" ]; then
  for dir in "$BUILDKIT_SCAN_SOURCE_EXTRAS"/*; do
    if [ -d "$dir" ]; then scan "$dir" "$(basename "$dir")"; fi
  done
fi
"""
SCANNER_DOCKERFILE = f"""FROM scratch
COPY rootfs/ /
ENV PATH=/bin HOME=/tmp XDG_CACHE_HOME=/tmp SYFT_CHECK_FOR_APP_UPDATE=false SPDX={SPDX}
ENTRYPOINT ["/bin/sh", "/scan.sh"]
"""


def syft_binary(version: str = SYFT_VERSION) -> Path:
    """cache_dir()/syft/VERSION/syft, built from the Go module proxy once per version
    (about 4 minutes cold on 2 cores)."""
    return install.cached_go_binary(SYFT_MODULE, "cmd/syft", version, minutes=4)


def scanner_tag(version: str = SYFT_VERSION) -> str:
    """The syft version and the script's digest: a changed script is a new tag."""
    return f"syft-{version}-{hashlib.sha256((SCAN_SCRIPT + SCANNER_DOCKERFILE).encode()).hexdigest()[:8]}"


def ensure_scanner(layout: Layout, registry_port: int, sbom_scanner: str, apply: bool) -> Outcome:
    """The scanner image builds use: `sbom_scanner` when the profile names one (an image
    in the organisation's registry, pushed there with `invoke scan.scanner`), else the
    kit's, pushed to the local registry. Fact: sbom_scanner."""
    if sbom_scanner:
        return Outcome.ok(f"the profile's scanner image {sbom_scanner}", sbom_scanner=sbom_scanner)
    if not registry_port:
        raise ScanError("there is no scanner image: sbom_scanner is empty and there is no local registry"
                        " (registry_port is 0) to push the kit's to",
                        "push the kit's scanner to your registry (invoke scan.scanner --push REF) and set"
                        " sbom_scanner=REF, or run with registry_port set (the lab's is 15000)")
    out = images.push_made_image(layout, registry_port, SCANNER_REPOSITORY, scanner_tag(), scanner_context,
                                 f"the SBOM scanner (syft {SYFT_VERSION})", apply)
    out.facts["sbom_scanner"] = out.facts.pop("base_image")
    out.facts.pop("base_digest", None)
    return out


def push_scanner(layout: Layout, ref: str) -> str:
    """Build the kit's scanner on the layout's builder and push it as `ref` (the
    organisation's registry, which production builders pull it from): its digest."""
    return images.build_and_push(layout, ref, scanner_context)


def scanner_context(dest: Path) -> Path:
    root = busybox_rootfs(dest / "rootfs")
    shutil.copy2(syft_binary(), root / "bin" / "syft")
    (root / "scan.sh").write_text(SCAN_SCRIPT)
    (dest / "Dockerfile").write_text(SCANNER_DOCKERFILE)
    return dest


def attest_opts(scanner: str) -> dict[str, str]:
    return {"attest:sbom": f"generator={scanner}"}


def build_with_sbom(layout: Layout, context: Path, scanner: str, archive: Path, source_policy: str = "",
                    timeout: float = 900) -> BuildResult:
    """Build context/Dockerfile into an OCI archive with its SBOM attestation."""
    return Buildctl.for_layout(layout).build(context, opts=attest_opts(scanner), output=f"type=oci,dest={archive}",
                                             source_policy=source_policy, timeout=timeout)


def read_sboms(archive: Path) -> list[dict]:
    """The SPDX documents attested in an OCI archive (every attestation manifest's
    layers whose predicate type is SPDX)."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> dict:
            algo, hexd = digest.split(":", 1)
            return json.load(tar.extractfile(f"blobs/{algo}/{hexd}"))

        docs, todo = [], list(json.load(tar.extractfile("index.json"))["manifests"])
        while todo:
            desc = todo.pop()
            if desc["mediaType"].endswith("image.index.v1+json"):
                todo += blob(desc["digest"])["manifests"]
            elif desc.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
                for layer in blob(desc["digest"])["layers"]:
                    if layer.get("annotations", {}).get("in-toto.io/predicate-type") == SPDX:
                        docs.append(blob(layer["digest"])["predicate"])
    return docs


def packages(doc: dict) -> list[dict[str, str]]:
    """{name, version, purl} of each package the SBOM lists (not the scanned directory
    itself, which syft describes as the document's root)."""
    out = []
    for pkg in doc.get("packages", []):
        if pkg.get("SPDXID", "").startswith("SPDXRef-DocumentRoot"):
            continue
        purl = next((r["referenceLocator"] for r in pkg.get("externalRefs", []) if r.get("referenceType") == "purl"), "")
        out.append({"name": pkg.get("name", ""), "version": pkg.get("versionInfo", ""), "purl": purl})
    return out


def build_and_attest(layout: Layout, context: Path, scanner: str, source_policy: str, apply: bool) -> Outcome:
    """Build the image with its SBOM attestation (into an OCI archive that is read and
    dropped), and keep the SBOM under runs/scan/. Facts: sbom (its path), packages."""
    if not apply:
        return Outcome.skipped(f"would build {context} with an SBOM attested by {scanner} (apply)")
    from ..core.paths import runs_dir

    with tempfile.TemporaryDirectory(prefix="bk-sbom-") as tmp:
        archive = Path(tmp) / "image.tar"
        result = build_with_sbom(layout, context, scanner, archive, source_policy)
        docs = read_sboms(archive)
    if not docs:
        raise ScanError(f"the build of {context} carries no SBOM attestation",
                        f"check that {scanner} is an SBOM generator image (invoke scan.scanner) and read the build log")
    pkgs = [p for doc in docs for p in packages(doc)]
    dest = runs_dir() / "scan" / f"{files.stamp()}.spdx.json"
    files.atomic_write(dest, json.dumps(docs[0] if len(docs) == 1 else docs, indent=1) + "\n")
    names = ", ".join(sorted({f"{p['name']} {p['version']}".strip() for p in pkgs})[:8])
    more = f" and {len(pkgs) - 8} more" if len(pkgs) > 8 else ""
    return Outcome.ok(f"built in {result.seconds:.1f}s with an SBOM of {len(pkgs)} package(s): {names}{more}",
                      sbom=str(dest), packages=len(pkgs))


def push(layout: Layout, context: Path, scanner: str, push_image: str, source_policy: str, apply: bool) -> Outcome:
    """After the gate passed: the same build (all cached), pushed with its SBOM."""
    if not push_image:
        return Outcome.skipped("push_image is empty: the image stays in the builder's cache")
    if not apply:
        return Outcome.skipped(f"would push {push_image} once the gate passes (apply)")
    result = Buildctl.for_layout(layout).build(context, opts=attest_opts(scanner), source_policy=source_policy,
                                               output=f"type=image,name={push_image},push=true", timeout=900)
    digest = result.metadata.get("containerimage.digest", "")
    return Outcome.changed(f"pushed {push_image} {digest} with its SBOM attestation", image=push_image,
                           image_digest=digest)

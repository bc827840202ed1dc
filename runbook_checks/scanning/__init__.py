"""Scanning without the internet: Dockerfile lint (hadolint, BuildKit's build checks), an
SBOM attested by the build itself (syft in a scanner image built here), and a gate that
refuses an image whose SBOM names a package on the operator's deny list."""

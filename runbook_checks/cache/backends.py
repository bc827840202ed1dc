"""Remote build cache backends, one class per kind (registry, inline, s3, local): the
`--export-cache` / `--import-cache` options buildctl takes (mode, compression,
ignore-error), validated before any build, and what the kit does with a backend: check
that it answers, measure what it holds, tell whether its cache changed, make a cache of
its own beside it, remove it. Nothing outside this module asks which kind a backend is."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ..core import files
from ..core.errors import CacheError, ParameterError, RegistryError
from ..core.layout import Layout
from ..core.params import Semantics
from ..core.results import Outcome
from ..daemon.programs import answers
from . import registry
from .s3 import Store, store_for

MODES = ("min", "max")
COMPRESSIONS = ("gzip", "zstd")
PROOF = "kit-proof"  # where a proof exports: beside the operator's cache, never over it
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class CacheBackend:
    """Where a build's cache goes and how. `target` is what the kind names: an image
    reference, a bucket, a directory."""

    kind: ClassVar[str] = ""
    target: str
    mode: str = "max"
    compression: str = "gzip"
    ignore_error: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError(f"cache_mode: {self.mode!r} is not a cache mode",
                                 "use min (the final image's layers) or max (every intermediate step)")
        if self.compression not in COMPRESSIONS:
            raise ParameterError(f"cache_compression: {self.compression!r} is not a compression",
                                 f"use one of: {', '.join(COMPRESSIONS)}")
        self.validate()

    @classmethod
    def from_params(cls, p: dict, layout: Layout, **options: Any) -> "CacheBackend":
        """This kind's backend from a runbook's parameters (cache_ref, cache_dir, ...)."""
        raise NotImplementedError

    # -- what buildctl gets -----------------------------------------------------------------
    def validate(self) -> None:
        """Refuse a target this kind cannot use, naming the parameter."""

    def where(self) -> str:
        """The `--export-cache` attributes that say where (ref=..., dest=..., bucket=...)."""
        raise NotImplementedError

    def export_option(self) -> str:
        """The value of `buildctl build --export-cache`."""
        attrs = [f"type={self.kind}", self.where(), f"mode={self.mode}", f"compression={self.compression}"]
        if self.compression == "zstd":
            attrs.append("force-compression=true")  # layers already in gzip are recompressed too
        if self.ignore_error:
            attrs.append("ignore-error=true")
        return ",".join(attrs)

    def import_option(self) -> str:
        """The value of `buildctl build --import-cache`."""
        raise NotImplementedError

    def output_option(self) -> str:
        """The build's `--output` the backend needs ("": the result is discarded)."""
        return ""

    def __str__(self) -> str:
        return f"{self.kind} {self.target}"

    # -- what the kit does with it ----------------------------------------------------------
    def within(self, name: str) -> "CacheBackend":
        """A cache of its own named `name` beside this one: a tag of the same repository,
        a prefix under this one, a subdirectory."""
        raise NotImplementedError

    def proof(self) -> "CacheBackend":
        """Where a proof exports: beside the operator's cache, never over it, so proving a
        backend leaves the team's cache as it was."""
        return self.within(PROOF)

    def for_context(self, name: str) -> "CacheBackend":
        """The cache of one warmed build context (cache-warm): each context has its own,
        so warming several never overwrites one with another."""
        return self.within(name)

    def ensure(self, params: Semantics, apply: bool) -> Outcome:
        """Before any build: the backend answers (created on apply where the kit can)."""
        raise NotImplementedError

    def stored_bytes(self, layout: Layout) -> int:
        """What the backend holds now (`layout`: the lab whose registry storage counts)."""
        raise NotImplementedError

    def fingerprint(self) -> str | None:
        """What identifies the cache now: "" when there is none; None when the kit cannot tell."""
        raise NotImplementedError

    def remove(self) -> None:
        """Remove this cache (its registry tag's blobs wait for the garbage collector)."""
        raise NotImplementedError

    def manifest(self) -> dict | None:
        """The cache's manifest as the backend stores it, or None when there is none."""
        raise NotImplementedError

    def blob_exists(self, digest: str) -> bool:
        raise NotImplementedError

    def drop_manifest(self) -> None:
        """Remove the manifest only (its blobs stay, for other manifests or the collector)."""
        self.remove()

    def missing_blobs(self, manifest: dict | None = None) -> list[str] | None:
        """The blobs the cache's manifest (`manifest`, else the one it holds now) names that
        the backend does not hold: [] when it is complete, None when there is no manifest
        (a cache cleanly absent)."""
        found = manifest if manifest is not None else self.manifest()
        if found is None:
            return None
        return [d for d in referenced_blobs(found) if not self.blob_exists(d)]


@dataclass(frozen=True)
class RegistryBackend(CacheBackend):
    """A cache manifest in an OCI registry, under the image reference `target`."""

    kind: ClassVar[str] = "registry"

    @classmethod
    def from_params(cls, p: dict, layout: Layout, **options: Any) -> "CacheBackend":
        """cache_ref; empty: the local registry's kit/cache:<kind> (needs registry_port)."""
        target = p.get("cache_ref") or ""
        if not target:
            if not p.get("registry_port"):
                raise ParameterError(f"cache_backend={cls.kind} needs cache_ref, or registry_port for the local"
                                     " registry", "set cache_ref=HOST[:PORT]/PATH[:TAG], or registry_port (lab: 15000)")
            target = f"127.0.0.1:{p['registry_port']}/kit/cache:{cls.kind}"
        return cls(target, **options)

    def validate(self) -> None:
        try:
            self.ref()
        except RegistryError:
            raise ParameterError(f"cache_ref: {self.target!r} is not an image reference with a registry host",
                                 "write it as HOST[:PORT]/PATH[:TAG], e.g. 127.0.0.1:15000/kit/cache:main") from None

    def ref(self) -> registry.Ref:
        return registry.Ref.parse(self.target)

    def where(self) -> str:
        return f"ref={self.target}"

    def import_option(self) -> str:
        return f"type=registry,ref={self.target}"

    def within(self, name: str) -> "CacheBackend":
        return replace(self, target=str(self.ref().with_tag(name)))

    def for_context(self, name: str) -> "CacheBackend":
        """The tag warm-NAME of the same repository."""
        return self.within(f"warm-{name}")

    def ensure(self, params: Semantics, apply: bool) -> Outcome:
        """/v2/ answers, as buildkitd will reach it: plain HTTP to the lab's registry and to
        loopback hosts without a registry_tls entry, HTTPS (with that entry's CA) to the
        rest; 401 means "log in", so it answers."""
        host = self.ref().host
        tls = params.registry_tls.get(host)
        plain = not tls and (host == f"127.0.0.1:{params.registry_port}" or host.split(":")[0] in
                             ("127.0.0.1", "localhost"))
        url = f"{'http' if plain else 'https'}://{host}/v2/"
        if not answers(url, timeout=5, cafile=tls.ca if tls else "", also=(401,)):
            raise CacheError(f"the registry {host} does not answer {url}",
                             "start it (the lab's: apply configure with registry_port set), fix cache_ref, or give"
                             " its CA in registry_tls")
        return Outcome.ok(f"the registry {host} answers {url}")

    def stored_bytes(self, layout: Layout) -> int:
        return registry.storage_bytes(layout)  # all of it: blobs are shared between tags

    def fingerprint(self) -> str | None:
        ref = self.ref()
        if ref.local_port is None:
            return None
        return registry.manifest_digest(ref.local_port, ref.repository, ref.tag or "latest")

    def remove(self) -> None:
        ref = self.ref()
        if ref.local_port is None:
            raise CacheError(f"the kit removes cache tags from the lab's registry only, not from {ref.host}",
                             "remove the tag with that registry's own tools")
        registry.delete_tag(ref.local_port, ref.repository, ref.tag or "latest")

    def _port(self) -> int:
        ref = self.ref()
        if ref.local_port is None:
            raise CacheError(f"the kit reads cache manifests from the lab's registry only, not from {ref.host}",
                             "check that registry's cache with its own tools")
        return ref.local_port

    def manifest(self) -> dict | None:
        ref = self.ref()
        return registry.manifest(self._port(), ref.repository, ref.tag or "latest")

    def blob_exists(self, digest: str) -> bool:
        return registry.blob_exists(self._port(), self.ref().repository, digest)


@dataclass(frozen=True)
class InlineBackend(RegistryBackend):
    """The cache inside the image itself (`target`: the image, pushed with the build)."""

    kind: ClassVar[str] = "inline"

    def validate(self) -> None:
        super().validate()
        if self.mode == "max":
            raise ParameterError("cache_mode: max is not possible with the inline backend (the image carries only"
                                 " the cache of its own layers)",
                                 "use cache_mode=min with inline, or the registry backend for mode=max")

    def export_option(self) -> str:
        return "type=inline" + (",ignore-error=true" if self.ignore_error else "")

    def output_option(self) -> str:
        """Its cache rides in the image config, so the image is pushed."""
        return f"type=image,name={self.target},push=true,compression={self.compression}"


@dataclass(frozen=True)
class S3Backend(CacheBackend):
    """Cache blobs and manifests in the bucket `target` under `prefix`, on `store` (the
    lab's S3 server or an organisation's object store). buildkitd reads the credentials
    from its environment (AWS_SHARED_CREDENTIALS_FILE), never from here."""

    kind: ClassVar[str] = "s3"
    prefix: str = ""
    store: Store | None = None

    @classmethod
    def from_params(cls, p: dict, layout: Layout, **options: Any) -> "CacheBackend":
        """cache_bucket and cache_prefix on s3_endpoint, or on the lab's S3 server (s3_port)."""
        store = store_for(layout, p)
        if store is None:
            raise ParameterError("cache_backend=s3 needs s3_endpoint (an organisation's object store) or s3_port"
                                 " (the lab's S3 server)",
                                 "set s3_port (lab: 19000, and apply install and configure so the server runs),"
                                 " or s3_endpoint=https://... with s3_credentials_file")
        return cls(p.get("cache_bucket", "buildkit-cache"), prefix=p.get("cache_prefix", ""), store=store, **options)

    def validate(self) -> None:
        if not BUCKET.fullmatch(self.target or ""):
            raise ParameterError(f"cache_bucket: {self.target!r} is not an S3 bucket name",
                                 "use 3-63 lowercase letters, digits, dots and hyphens, e.g. buildkit-cache")
        endpoint = self.store.url if self.store else ""
        if not re.fullmatch(r"[A-Za-z0-9._/-]*", self.prefix) or not re.fullmatch(r"(https?://[^,\s]+)?", endpoint):
            raise ParameterError(f"cache_prefix {self.prefix!r} or the S3 endpoint {endpoint!r} holds a"
                                 " character buildctl would split on", "use letters, digits, . _ / - only")

    def where(self) -> str:
        attrs = [f"bucket={self.target}", f"region={self.store.region if self.store else 'us-east-1'}", "name=kit"]
        if self.prefix:
            attrs.append(f"prefix={self.prefix.rstrip('/')}/")
        if self.store:
            attrs += [f"endpoint_url={self.store.url}", "use_path_style=true"]
        return ",".join(attrs)

    def import_option(self) -> str:
        return f"type=s3,{self.where()}"

    def __str__(self) -> str:
        return f"s3 {self.target}" + (f"/{self.prefix}" if self.prefix else "")

    def within(self, name: str) -> "CacheBackend":
        return replace(self, prefix="/".join(p for p in (self.prefix.strip("/"), name) if p))

    def for_context(self, name: str) -> "CacheBackend":
        """PREFIX/warm/NAME."""
        return self.within("warm").within(name)

    def _store(self) -> Store:
        if self.store is None:
            raise CacheError(f"no S3 service is known for bucket {self.target}",
                             "set s3_endpoint (an organisation's object store) or s3_port (the lab's S3 server)")
        return self.store

    def ensure(self, params: Semantics, apply: bool) -> Outcome:
        """The credentials are accepted (ListBuckets) and the bucket exists (created on apply)."""
        return self._store().ensure_bucket(self.target, apply)

    def stored_bytes(self, layout: Layout) -> int:
        return sum(o["Size"] for o in self._store().objects(self.target, self.prefix))

    def fingerprint(self) -> str | None:
        """The ETag of the cache manifest object (an absent bucket lists nothing: no cache yet)."""
        key = f"{self.prefix.rstrip('/')}/manifests/kit" if self.prefix else "manifests/kit"
        found = [o for o in self._store().objects(self.target, key) if o["Key"] == key]
        return str(found[0].get("ETag", found[0]["Size"])) if found else ""

    def remove(self) -> None:
        store = self._store()
        store.delete(self.target, [o["Key"] for o in store.objects(self.target, self.prefix)])

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), *parts) if p)

    def manifest(self) -> dict | None:
        body = self._store().read(self.target, self._key("manifests", "kit"))
        return None if body is None else json.loads(body)

    def blob_exists(self, digest: str) -> bool:
        key = self._key("blobs", digest)
        return any(o["Key"] == key for o in self._store().objects(self.target, key))

    def drop_manifest(self) -> None:
        self._store().delete(self.target, [self._key("manifests", "kit")])


@dataclass(frozen=True)
class LocalBackend(CacheBackend):
    """An OCI layout in the directory `target`, written and read by the build's client."""

    kind: ClassVar[str] = "local"

    @classmethod
    def from_params(cls, p: dict, layout: Layout, **options: Any) -> "CacheBackend":
        """cache_dir; empty: cache-export under the state directory."""
        return cls(p.get("cache_dir") or str(layout.state_dir / "cache-export"), **options)

    def validate(self) -> None:
        if not self.target or not Path(self.target).is_absolute():
            raise ParameterError(f"cache_dir: {self.target!r} is not an absolute directory",
                                 "give the local cache an absolute path, e.g. /var/cache/buildkit-export")
        if "," in self.target:
            raise ParameterError(f"cache_dir: {self.target!r} contains a comma",
                                 "buildctl splits cache options on commas: choose a path without one")

    def where(self) -> str:
        return f"dest={self.target}"

    def import_option(self) -> str:
        return f"type=local,src={self.target}"

    def within(self, name: str) -> "CacheBackend":
        return replace(self, target=str(Path(self.target) / name))

    def ensure(self, params: Semantics, apply: bool) -> Outcome:
        files.writable_dir(Path(self.target))
        return Outcome.ok(f"{self.target} is writable")

    def stored_bytes(self, layout: Layout) -> int:
        return files.tree_bytes(Path(self.target))

    def fingerprint(self) -> str | None:
        index = Path(self.target) / "index.json"
        return files.sha256(index) if index.is_file() else ""

    def remove(self) -> None:
        shutil.rmtree(self.target, ignore_errors=True)

    def manifest(self) -> dict | None:
        index = Path(self.target) / "index.json"
        return json.loads(index.read_text()) if index.is_file() else None

    def blob_exists(self, digest: str) -> bool:
        algorithm, _, hexa = digest.partition(":")
        return (Path(self.target) / "blobs" / algorithm / hexa).is_file()

    def drop_manifest(self) -> None:
        (Path(self.target) / "index.json").unlink(missing_ok=True)


def referenced_blobs(manifest: dict) -> list[str]:
    """The digests a cache manifest names: an OCI index or image manifest (registry, local:
    its descriptors), or BuildKit's cache config (S3: its layers' blobs)."""
    digests = [d["digest"] for d in manifest.get("manifests", []) + manifest.get("layers", [])
               if isinstance(d, dict) and "digest" in d]
    digests += [d["blob"] for d in manifest.get("layers", []) if isinstance(d, dict) and "blob" in d]
    if isinstance(manifest.get("config"), dict) and "digest" in manifest["config"]:
        digests.append(manifest["config"]["digest"])
    return list(dict.fromkeys(digests))


KINDS: dict[str, type[CacheBackend]] = {b.kind: b for b in (LocalBackend, RegistryBackend, InlineBackend, S3Backend)}
BACKENDS = tuple(KINDS)


def kind_of(kind: str) -> type[CacheBackend]:
    """The class of a cache_backend value, or an error naming the choices."""
    if kind not in KINDS:
        raise ParameterError(f"cache_backend: {kind!r} is not a cache backend", f"use one of: {', '.join(BACKENDS)}")
    return KINDS[kind]


def make(kind: str, target: str, *options: Any, **named: Any) -> CacheBackend:
    """The backend of `kind` on `target` (a ref, a bucket, a directory), then mode,
    compression, ignore_error as its class takes them."""
    return kind_of(kind)(target, *options, **named)


def backend_from_params(p: dict, layout: Layout) -> CacheBackend:
    """The backend a runbook's parameters select (cache_backend and its options)."""
    options = dict(mode=p.get("cache_mode", "max"), compression=p.get("cache_compression", "gzip"),
                   ignore_error=p.get("cache_ignore_error", False))
    return kind_of(p.get("cache_backend", "registry")).from_params(p, layout, **options)


def backend_for(params: Semantics, layout: Layout) -> CacheBackend:
    """The backend a runbook's validated parameters select."""
    return backend_from_params(params.model_dump(), layout)

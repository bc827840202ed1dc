"""The lab's S3 server for the s3 cache backend: Versity's S3 gateway (versitygw, Apache
2.0, built from the Go module proxy) over a directory of the state dir, on 127.0.0.1.

Credentials live in files, never in parameters: an AWS shared-credentials file (0600)
that the kit generates once, the gateway reads at start (through `python -m
runbook_checks.cache.s3 serve`, so the secret is in no command line) and buildkitd reads
through AWS_SHARED_CREDENTIALS_FILE in its environment. boto3 creates the bucket, checks
access before any build, and removes objects older than a retention age."""

from __future__ import annotations

import argparse
import configparser
import datetime as _dt
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core import files
from ..core.errors import S3Error
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..daemon.install import cached_go_binary, go_module_version
from ..daemon.programs import Program

VERSITYGW_MODULE = "github.com/versity/versitygw"
VERSITYGW_VERSION = "v1.8.0"
REGION = "us-east-1"


def binary(layout: Layout) -> Path:
    return layout.bin_dir / "versitygw"


def built_binary(version: str = VERSITYGW_VERSION) -> Path:
    """versitygw VERSION in the kit's cache, built from the module proxy once per version."""
    return cached_go_binary(VERSITYGW_MODULE, "cmd/versitygw", version, minutes=3)


def data_dir(layout: Layout) -> Path:
    return layout.state_dir / "s3"


def default_credentials_file(layout: Layout) -> Path:
    return layout.config_path.parent / "s3" / "credentials"


def credentials_file(layout: Layout, params: dict) -> Path:
    given = params.get("s3_credentials_file") or ""
    return Path(given) if given else default_credentials_file(layout)


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------
# install: the gateway binary and the credentials file
# --------------------------------------------------------------------------------------
def ensure_binary(layout: Layout, port: int, apply: bool, version: str = VERSITYGW_VERSION) -> Outcome:
    """versitygw VERSION in the layout's bin dir (built from the module proxy once per version)."""
    if not port:
        return Outcome.skipped("s3_port is 0: no S3 server")
    target = binary(layout)
    found = go_module_version(target, "github.com/versity/versitygw")
    if found == version:
        return Outcome.ok(f"{target} is versitygw {version}")
    if not apply:
        return Outcome.changed(f"would install versitygw {version} into {layout.bin_dir}"
                               + (f" (found {found})" if found else ""))
    files.atomic_copy(built_binary(version), target)
    return Outcome.changed(f"installed versitygw {version} to {target}")


def read_credentials(path: Path, profile: str = "default") -> tuple[str, str]:
    """(access key id, secret) from an AWS shared-credentials file, or a clear error."""
    if not path.is_file():
        raise S3Error(f"the S3 credentials file {path} does not exist",
                      "apply the install runbook (it generates the lab's), or point s3_credentials_file at an"
                      " AWS shared-credentials file")
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        section = parser[profile]
        return section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip()
    except (configparser.Error, KeyError):
        raise S3Error(f"{path} is not an AWS shared-credentials file with a [{profile}] section holding"
                      " aws_access_key_id and aws_secret_access_key",
                      f"write it as:\n[{profile}]\naws_access_key_id = ...\naws_secret_access_key = ...") from None


def ensure_credentials(layout: Layout, params: dict, apply: bool) -> Outcome:
    """The lab's credentials file: generated once (0600), never rewritten; a given
    s3_credentials_file is only checked."""
    if not params.get("s3_port"):
        return Outcome.skipped("s3_port is 0: no S3 server")
    path = credentials_file(layout, params)
    if path.exists() or params.get("s3_credentials_file"):
        read_credentials(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise S3Error(f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}")
        return Outcome.ok(f"S3 credentials in {path} (mode 600)")
    if not apply:
        return Outcome.changed(f"would generate S3 credentials into {path} (mode 600)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = (f"[default]\naws_access_key_id = kit{secrets.token_hex(8)}\n"
            f"aws_secret_access_key = {secrets.token_urlsafe(30)}\n")
    files.atomic_write(path, text, mode=0o600)
    return Outcome.changed(f"generated S3 credentials into {path} (mode 600)")


# --------------------------------------------------------------------------------------
# the supervisord program
# --------------------------------------------------------------------------------------
def program(layout: Layout, params: dict) -> Program:
    """The S3 gateway beside buildkitd (daemon.programs); buildkitd is given the
    credentials file through AWS_SHARED_CREDENTIALS_FILE."""
    port = params["s3_port"]
    creds = credentials_file(layout, params)
    return Program("s3", f"{sys.executable} -m runbook_checks.cache.s3 serve --listen 127.0.0.1:{port}"
                   f" --root {data_dir(layout)} --credentials {creds} --binary {binary(layout)}",
                   port, layout.log_dir / "s3.log", f"{endpoint(port)}/health", dirs=(data_dir(layout),),
                   directory=str(PROJECT_ROOT), daemon_environment={"AWS_SHARED_CREDENTIALS_FILE": str(creds)})


def serve(argv: list[str]) -> None:
    """Exec versitygw with the root credentials from the file in its environment."""
    parser = argparse.ArgumentParser(prog="python -m runbook_checks.cache.s3 serve")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--credentials", required=True)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args(argv)
    key, secret = read_credentials(Path(args.credentials))
    env = dict(os.environ, ROOT_ACCESS_KEY_ID=key, ROOT_SECRET_ACCESS_KEY=secret)
    os.execve(args.binary, [args.binary, "--port", args.listen, "--region", REGION, "--health", "/health",
                            "posix", args.root], env)


# --------------------------------------------------------------------------------------
# client side: bucket, access check, retention (boto3)
# --------------------------------------------------------------------------------------
AUTH_ERRORS = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "XAdminUserNotFound")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") or type(exc).__name__


@dataclass(frozen=True)
class Store:
    """An S3 service as the kit's client sees it: the lab's server or an organisation's
    object store (`url`), the credentials file, the region."""

    url: str
    creds: Path
    region: str = REGION

    def client(self):
        import boto3
        from botocore.config import Config

        key, secret = read_credentials(self.creds)
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          connect_timeout=5, read_timeout=30))

    def _fail(self, exc: Exception, doing: str) -> S3Error:
        """The kit's error for a botocore failure: refused credentials, or what else went wrong."""
        code = _error_code(exc)
        if code in AUTH_ERRORS:
            return S3Error(f"the S3 service at {self.url} refused the credentials in {self.creds} ({code})",
                           "point s3_credentials_file at that service's credentials (the lab's: etc/s3/credentials)")
        if not hasattr(exc, "response"):  # no answer at all
            return S3Error(f"the S3 service at {self.url} does not answer ({doing}): {exc}",
                           "start it (the lab's: apply configure with s3_port set), or fix s3_endpoint")
        return S3Error(f"{doing} on {self.url} failed: {code}", "check cache_bucket and the S3 service's log")

    def ensure_bucket(self, bucket: str, apply: bool) -> Outcome:
        """These credentials are accepted (ListBuckets), the bucket exists (created on apply)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3 = self.client()
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket in names:
                return Outcome.ok(f"bucket {bucket} on {self.url} answers these credentials")
            if not apply:
                return Outcome.changed(f"would create bucket {bucket} on {self.url}")
            s3.create_bucket(Bucket=bucket)
            return Outcome.changed(f"created bucket {bucket} on {self.url}")
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"creating or listing bucket {bucket}") from None

    def objects(self, bucket: str, prefix: str = "") -> list[dict]:
        """Every object under prefix: Key, Size, LastModified ([] when the bucket is absent)."""
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[dict] = []
        try:
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchBucket", "404"):
                return []
            raise self._fail(exc, f"listing s3://{bucket}/{prefix}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"listing s3://{bucket}/{prefix}") from None
        return out

    def read(self, bucket: str, key: str) -> bytes | None:
        """An object's body, or None when the object (or the bucket) is absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise self._fail(exc, f"reading s3://{bucket}/{key}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"reading s3://{bucket}/{key}") from None

    def delete(self, bucket: str, keys: list[str]) -> None:
        """Delete keys (1000 per request); a key the service refused is an error naming it."""
        s3 = self.client()
        for i in range(0, len(keys), 1000):
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
            refused = answer.get("Errors") or []
            if refused:
                raise S3Error(f"the S3 service refused to delete {len(refused)} objects, e.g. {refused[0].get('Key')}:"
                              f" {refused[0].get('Code')} {refused[0].get('Message', '')}",
                              "check the credentials' permissions on the bucket; nothing else was changed by this batch")

    def expire(self, bucket: str, prefix: str, older_than: int, apply: bool,
               now: _dt.datetime | None = None) -> Outcome:
        """Remove cache manifests older than `older_than` seconds, then the blobs that are
        as old and that no remaining manifest references (BuildKit's S3 cache never
        deletes: moby/buildkit#3686). A blob a kept manifest uses is never removed, however
        old: an export re-uploads a reused blob only once it is older than touch_refresh."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        found = self.objects(bucket, prefix)
        old = {o["Key"] for o in found if (now - o["LastModified"]).total_seconds() > older_than}
        manifests = [o for o in found if "/manifests/" in "/" + o["Key"][len(prefix):]]
        kept_refs: set[str] = set()
        s3 = self.client() if manifests else None
        for m in manifests:
            if m["Key"] not in old:
                body = s3.get_object(Bucket=bucket, Key=m["Key"])["Body"].read().decode(errors="replace")
                kept_refs |= set(DIGEST.findall(body))
        doomed = [o for o in found if o["Key"] in old and not (set(DIGEST.findall(o["Key"])) & kept_refs)]
        spared = len(old) - len(doomed)
        size = sum(o["Size"] for o in doomed)
        note = f" ({spared} old blobs kept: a younger manifest uses them)" if spared else ""
        listing = "\n".join(o["Key"] for o in doomed[:50])
        if not doomed:
            return Outcome.ok(f"nothing under s3://{bucket}/{prefix} is older than {older_than}s and unused{note}",
                              s3_removed_objects=0, s3_reclaimed_bytes=0)
        if not apply:
            return Outcome.changed(f"would remove {len(doomed)} objects ({size} bytes) older than {older_than}s"
                                   f" from s3://{bucket}/{prefix}{note}", listing)
        self.delete(bucket, [o["Key"] for o in doomed])
        return Outcome.changed(f"removed {len(doomed)} objects ({size} bytes) older than {older_than}s from"
                               f" s3://{bucket}/{prefix}{note}", listing,
                               s3_removed_objects=len(doomed), s3_reclaimed_bytes=size)


def store_for(layout: Layout, params: dict) -> Store | None:
    """The S3 service the parameters name: s3_endpoint (an organisation's object store),
    else the lab's server on s3_port; None when neither is set."""
    url = params.get("s3_endpoint") or (endpoint(params["s3_port"]) if params.get("s3_port") else "")
    if not url:
        return None
    return Store(url, credentials_file(layout, params), params.get("s3_region") or REGION)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m runbook_checks.cache.s3 serve --listen 127.0.0.1:PORT --root DIR --credentials FILE"
                 " --binary PATH")
    serve(sys.argv[2:])

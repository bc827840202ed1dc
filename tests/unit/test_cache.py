"""Cache backend options as buildctl takes them, and the errors for bad ones."""

import pytest

from runbook_checks.cache import backends
from runbook_checks.core import layout as layout_mod, params
from runbook_checks.core.errors import ParameterError


def test_registry_options():
    b = backends.make("registry", "127.0.0.1:15000/kit/cache:main", "max", "zstd", ignore_error=True)
    assert b.export_option() == ("type=registry,ref=127.0.0.1:15000/kit/cache:main,mode=max,compression=zstd,"
                                 "force-compression=true,ignore-error=true")
    assert b.import_option() == "type=registry,ref=127.0.0.1:15000/kit/cache:main"
    assert b.output_option() == ""


def test_local_options():
    b = backends.make("local", "/srv/cache", "min")
    assert b.export_option() == "type=local,dest=/srv/cache,mode=min,compression=gzip"
    assert b.import_option() == "type=local,src=/srv/cache"


def test_inline_rides_in_the_pushed_image():
    b = backends.make("inline", "127.0.0.1:15000/app:main", "min")
    assert b.export_option() == "type=inline"
    assert b.import_option() == "type=registry,ref=127.0.0.1:15000/app:main"
    assert b.output_option() == "type=image,name=127.0.0.1:15000/app:main,push=true,compression=gzip"


@pytest.mark.parametrize("args,message", [
    (("gha", "127.0.0.1:1/a"), "cache_backend: 'gha' is not a cache backend"),
    (("registry", "127.0.0.1:1/a", "all"), "cache_mode: 'all'"),
    (("registry", "127.0.0.1:1/a", "max", "lz4"), "cache_compression: 'lz4'"),
    (("registry", "kit/cache"), "cache_ref: 'kit/cache' is not an image reference with a registry host"),
    (("local", "relative/dir"), "cache_dir: 'relative/dir' is not an absolute directory"),
    (("local", "/a,b"), "contains a comma"),
    (("inline", "127.0.0.1:1/a", "max"), "max is not possible with the inline backend"),
])
def test_bad_backends_are_refused_before_any_build(args, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(")):
        backends.make(*args)


def test_backend_from_parameters(tmp_path):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    b = backends.backend_from_params({"cache_backend": "registry", "registry_port": 15000}, lay)
    assert b.target == "127.0.0.1:15000/kit/cache:registry"
    assert backends.backend_from_params({"cache_backend": "local"}, lay).target == str(tmp_path / "cache-export")
    with pytest.raises(ParameterError, match="needs cache_ref, or registry_port"):
        backends.backend_from_params({"cache_backend": "registry"}, lay)
    with pytest.raises(ParameterError, match="needs s3_endpoint .* or s3_port"):
        backends.backend_from_params({"cache_backend": "s3"}, lay)
    s3 = backends.backend_from_params({"cache_backend": "s3", "s3_port": 19000, "cache_prefix": "team-a",
                                    "cache_ignore_error": True}, lay)
    assert s3.export_option() == ("type=s3,bucket=buildkit-cache,region=us-east-1,name=kit,prefix=team-a/,"
                                  "endpoint_url=http://127.0.0.1:19000,use_path_style=true,mode=max,"
                                  "compression=gzip,ignore-error=true")
    assert s3.import_option().startswith("type=s3,bucket=buildkit-cache,")
    org = backends.backend_from_params({"cache_backend": "s3", "s3_endpoint": "https://s3.example.org",
                                     "s3_region": "eu-west-1", "s3_port": 19000}, lay)
    assert "region=eu-west-1" in org.export_option() and "endpoint_url=https://s3.example.org" in org.export_option()
    with pytest.raises(ParameterError, match="cache_bucket"):
        backends.make("s3", "Bad_Bucket")


@pytest.mark.parametrize("key,value", [("cache_ref", "cache:latest"), ("cache_dir", "rel"), ("cache_mode", "all"),
                                        ("cache_compression", "lz4"), ("cache_backend", "gha"),
                                        ("cache_bucket", "A"), ("s3_credentials_file", "rel")])
def test_semantics_name_the_cache_parameter(key, value):
    with pytest.raises(ParameterError, match=key):
        params.validate({key: value})


def test_proofs_export_beside_the_operators_cache_never_over_it(tmp_path):
    assert backends.make("registry", "reg.example:5000/team/cache:main").proof().target == \
        "reg.example:5000/team/cache:kit-proof"
    assert backends.make("registry", "127.0.0.1:15000/kit/cache").proof().target == \
        "127.0.0.1:15000/kit/cache:kit-proof"
    assert backends.make("s3", "bucket", prefix="team-a").proof().prefix == "team-a/kit-proof"
    assert backends.make("s3", "bucket").proof().prefix == "kit-proof"
    assert backends.make("local", str(tmp_path)).proof().target == str(tmp_path / "kit-proof")

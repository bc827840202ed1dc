import pytest

from runbook_checks.core import params, profiles, units
from runbook_checks.core.errors import ParameterError


@pytest.mark.parametrize("value,expected", [
    (512000000, 512000000), ("512MB", 512000000), ("10GiB", 10 * 2**30), ("1.5 GB", 1500000000),
    ("10%", "10%"), (0, 0),
])
def test_sizes(value, expected):
    assert units.parse_size(value) == expected


@pytest.mark.parametrize("value", ["12 parsecs", "-5MB", "0%", "150%", True, "lots"])
def test_bad_sizes_name_the_parameter_and_the_fix(value):
    with pytest.raises(ParameterError) as err:
        units.parse_size(value)
    assert "fix:" in str(err.value) and repr(value) in err.value.problem
    with pytest.raises(ParameterError) as named:
        params.validate({"gc_policy": [{"max_used_space": value}]})
    assert "'gc_policy[0].max_used_space'" in named.value.problem and named.value.fix


@pytest.mark.parametrize("value,seconds", [(172800, 172800), ("48h", 172800), ("7d", 604800), ("1w 2d", 777600),
                                           ("90m", 5400), ("30s", 30), ("45", 45)])
def test_durations(value, seconds):
    assert units.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "3 fortnights", -1])
def test_bad_durations(value):
    with pytest.raises(ParameterError, match="not a duration"):
        units.parse_duration(value)
    with pytest.raises(ParameterError, match="'prune_keep_duration'.*not a duration"):
        params.validate({"prune_keep_duration": value})


def test_every_parameter_line_parses_in_every_runbook():
    """papermill silently drops a line with two '=' (e.g. in its help): count them all."""
    import nbformat

    for name in profiles.list_runbooks():
        path = profiles.runbook_path(name)
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
        declared = profiles.declared_parameters(path)
        assert len(declared) == len(lines), (name, sorted(declared))
        assert {"mode", "profile", "state_dir"} <= set(declared)
        assert declared["mode"]["default"] == '"check"', "runbooks must default to check mode"
        for pname, p in declared.items():
            assert p["help"], f"{name}.{pname} has no help"


def test_shared_parameters_have_one_default_everywhere():
    seen: dict[str, tuple[str, str]] = {}
    for name in profiles.list_runbooks():
        for pname, p in profiles.declared_parameters(profiles.runbook_path(name)).items():
            if pname in seen:
                assert seen[pname][1] == p["default"], f"{pname}: {seen[pname]} vs {name} {p['default']}"
            seen[pname] = (name, p["default"])


def test_every_declared_parameter_has_semantics():
    for name in profiles.list_runbooks():
        for pname in profiles.declared_parameters(profiles.runbook_path(name)):
            assert pname in params.Semantics.model_fields, f"{name}.{pname} is not in params.Semantics"


def test_resolve_layers_profile_and_sets():
    values = profiles.resolve("configure", "ci", "check", ["max_parallelism=3", "log_level=debug"])
    assert values["max_parallelism"] == 3 and values["log_level"] == "debug"
    assert values["history_max_age"] == "1h"  # from ci.yaml
    assert values["mode"] == "check" and values["profile"] == "ci"


def test_unknown_parameter_names_it_and_lists_the_accepted_ones():
    with pytest.raises(ParameterError) as err:
        profiles.resolve("install", "lab", "check", ["colour=blue"])
    assert "'colour'" in str(err.value) and "buildkit_version" in str(err.value)


@pytest.mark.parametrize("item,words", [
    ("max_parallelism=many", ["'max_parallelism'", "a whole number"]),
    ("log_level=loud", ["log_level", "error, warn, info, debug, trace"]),
    ("buildkit_version=latest", ["buildkit_version", "v0.34.2"]),
    ("debug_port=70000", ["debug_port", "65535"]),
    ("tcp_address=tcp://0.0.0.0:1234", ["tcp_address", "loopback"]),
    ("tcp_address=tcp://127.0.0.1:1234\nExecStartPre=/bin/evil", ["tcp_address"]),
    ("gc_policy=[{max_used_space: 12 parsecs}]", ["gc_policy[0].max_used_space", "12 parsecs"]),
    ("novalue", ["key=value"]),
])
def test_ill_typed_values_fail_before_anything_runs(item, words):
    name = "configure" if not item.startswith("buildkit_version") else "install"
    with pytest.raises(ParameterError) as err:
        profiles.resolve(name, "lab", "check", [item])
    for word in words:
        assert word in str(err.value)


def test_unknown_profile_and_runbook():
    with pytest.raises(ParameterError, match="lab, ci, production"):
        profiles.resolve("install", "staging", "check")
    with pytest.raises(ParameterError, match="install"):
        profiles.runbook_path("frobnicate")


def test_coerce():
    assert profiles.coerce("x", "a,b", "list") == ["a", "b"]
    assert profiles.coerce("x", '["a"]', "list") == ["a"]
    assert profiles.coerce("x", "true", "bool") is True
    assert profiles.coerce("x", "3", "float") == 3.0
    assert profiles.coerce("x", "01", "str") == "01"


def test_gc_rule_filters_are_checked():
    with pytest.raises(ParameterError, match="filter"):
        params.validate({"gc_policy": [{"filters": ["type=exec.cachemount"]}]})


def test_lab_profile_equals_the_notebook_defaults():
    """Run All in Jupyter (and nbval) uses the defaults: they must be the lab profile."""
    import ast

    lab = profiles.load_profile("lab").values
    for name in profiles.list_runbooks():
        for pname, p in profiles.declared_parameters(profiles.runbook_path(name)).items():
            if pname in lab and pname not in ("state_dir", "debug_port", "service_manager"):
                assert ast.literal_eval(p["default"]) == lab[pname], (name, pname)

"""The peers benchmark's pieces without a builder: Buildah's log read into steps, the
records and their JSON, medians, the tables with ratios and reasons, the verdict against
BuildKit's defaults with the noise, and the plot."""

from __future__ import annotations

import json

import pytest

from runbook_checks.cache import peers
from runbook_checks.core import params
from runbook_checks.core.errors import ParameterError

# the lines `buildah bud --layers` (1.28) printed for the small workload on a fresh
# storage root importing a --cache-from repository, trimmed to the STEP and --> lines
FRESH_REMOTE = """\
STEP 1/5: FROM 127.0.0.1:15000/kit/busybox:latest
STEP 2/5: RUN mkdir -p /data && for i in $(seq 1 2000); do echo "row $i $((i * i))"; done > /data/rows
--> Cache pulled from remote 127.0.0.1:15000/kit/peers-try:a5ec32f18e05
--> Using cache e7e80e50f9369bb3ccbc9b2a016b5bbc50bc2e1f9edbda1da9576993c5858817
STEP 3/5: COPY src/ /src/
--> Cache pulled from remote 127.0.0.1:15000/kit/peers-try:48260eaecf62
--> Using cache 22b26f5bdb4784bc0dd13c3ac3dafd18d42debd0ba9c133b5c6d43949afb525c
STEP 4/5: RUN sort -r /data/rows | head -n 100 > /data/top && cat /src/message.txt >> /data/top
--> Cache pulled from remote 127.0.0.1:15000/kit/peers-try:a08932e2d3c4
--> Using cache c5f5c0812fe595e04d97c2eec40b54b24ec4aa4c6d58e52fbe05270e5ca98ccc
STEP 5/5: RUN sha256sum /data/* /src/* > /data/sums && wc -l /data/sums
3 /data/sums
--> 1106851bc9c
"""
# a multi-stage build: ENV and ENTRYPOINT are no steps BuildKit counts; FROM neither
MULTI_STAGE = """\
[1/2] STEP 1/3: FROM 127.0.0.1:15000/kit/debian:bookworm AS toolchain
[1/2] STEP 2/3: RUN apt-get update
--> Using cache 0f1
[1/2] STEP 3/3: ENV GOPATH=/go
--> Using cache 0f2
[2/2] STEP 1/3: FROM 127.0.0.1:15000/kit/debian:bookworm AS runtime
[2/2] STEP 2/3: COPY --from=toolchain /out/buildlog /usr/local/bin/buildlog
--> 3a1
[2/2] STEP 3/3: ENTRYPOINT ["buildlog"]
"""


def test_buildahs_log_gives_the_steps_buildkit_counts_and_the_cached_ones():
    assert peers.steps(FRESH_REMOTE) == (4, 3)
    assert peers.steps(MULTI_STAGE) == (2, 1)


def record(tool, scenario, seconds, rep=1, workload="go-app", **extra):
    return peers.Record(tool, workload, scenario, rep, seconds, 3, 8, 50_000_000, 1.5, 1000, **extra)


def runs(kit=(10.0, 11.0, 12.0), defaults=(10.0, 10.5, 11.0), buildah=(30.0, 31.0, 29.0)):
    out = []
    for tool, seconds in (("buildkit-kit", kit), ("buildkit-defaults", defaults), ("buildah", buildah)):
        out += [record(tool, "cold", s, rep) for rep, s in enumerate(seconds, 1)]
    return out


def test_records_round_trip_and_medians_are_real_repetitions(tmp_path):
    records = runs() + [peers.Record("buildah", "go-app", "warm", 1, reason="buildah is not installed")]
    path = peers.write_results(records, tmp_path, "20260101T000000.000000Z")
    assert path.name == "peers-20260101T000000.000000Z.json"
    assert set(peers.RECORD_FIELDS) <= set(json.loads(path.read_text())[0])
    assert peers.read_results(path) == records
    med = {(r.tool, r.scenario): r for r in peers.medians(records)}
    assert med[("buildkit-kit", "cold")].seconds == 11.0 and med[("buildah", "cold")].repetition == 1
    assert med[("buildah", "warm")].reason == "buildah is not installed"
    (tmp_path / "bad.json").write_text(json.dumps([{"tool": "x"}]))
    with pytest.raises(Exception, match="not a list of peers benchmark records"):
        peers.read_results(tmp_path / "bad.json")


def test_the_table_gives_each_peers_time_over_the_kits_and_says_why_one_is_missing():
    records = runs() + [peers.Record("buildah", "go-app", "warm", 1, reason="buildah is not installed"),
                        record("buildkit-kit", "warm", 0.5), record("buildkit-defaults", "warm", 0.6)]
    text = peers.markdown_table(records)
    assert "| go-app | cold | 11.00 (3/8) | 10.50 (3/8) | 30.00 (3/8) | 0.95 | 2.73 |" in text
    assert "| go-app | warm | 0.50 (3/8) | 0.60 (3/8) | — (buildah is not installed) | 1.20 |  |" in text
    assert "47.7 MiB / 1.5" in text


def test_the_kit_is_slower_than_the_defaults_only_beyond_the_noise():
    assert peers.verdict(runs()) == []  # 11.0 against 10.5: within the spread of 2 s
    slower = peers.verdict(runs(kit=(14.0, 14.2, 14.1)))
    assert len(slower) == 1 and "go-app cold: the kit's 14.10s against the defaults' 10.50s" in slower[0]


def test_each_tool_goes_first_in_turn():
    firsts = [peers.rotation(peers.TOOLS, turn)[0] for turn in range(6)]
    assert firsts == [*peers.TOOLS, *peers.TOOLS]
    assert sorted(peers.rotation(peers.TOOLS, 1)) == sorted(peers.TOOLS)


def test_the_plot_is_a_png(tmp_path):
    png = peers.plot(runs(), tmp_path / "p.png", "run X on a test")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tools_and_scenarios_are_refused_with_the_choices():
    assert params.validate({"benchmark": "peers", "tools": ["buildah"]}).tools == ["buildah"]
    with pytest.raises(ParameterError, match="kaniko is not a tool"):
        params.validate({"benchmark": "peers", "tools": ["kaniko"]})
    with pytest.raises(ParameterError, match="only the peers benchmark compares tools"):
        params.validate({"benchmark": "cache", "tools": ["buildah"]})
    with pytest.raises(ParameterError, match="fresh-s3 is not a scenario of the peers benchmark"):
        params.validate({"benchmark": "peers", "scenarios": ["cold", "warm", "edit", "fresh-s3"]})

"""The resource limits a process runs under, read from its cgroups (v2, or the v1
controllers of a hybrid host), in the units the kit configures them in: memory in bytes,
CPU as a percentage of one CPU, tasks as a count, I/O as systemd's IOWeight.

A limit the kernel cannot apply here is reported with the reason, never as in force:
an I/O weight needs the BFQ scheduler (cgroup v1) or a weight-based I/O controller (v2)
on the disk that holds the daemon's root; on v1, systemd 252 writes IOWeight as
blkio.bfq.weight through two conversions (IOWeight -> blkio weight, clamped to 10..1000,
then that number as an IOWeight -> BFQ weight), measured inside a rehearsal host."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import KitError

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = "infinity"


@dataclass(frozen=True)
class Limit:
    """One limit: as configured, as in force (None: not applied), and why not."""

    configured: str
    in_force: str | None
    reason: str = ""

    @property
    def holds(self) -> bool:
        return self.in_force == self.configured

    def to_dict(self) -> dict:
        return asdict(self)


def paths(pid: int, scope: str = "") -> dict[str, Path]:
    """{controller: its cgroup directory} of a process; "unified" for the v2 hierarchy.
    With `scope` (a slice's name), the directory of that ancestor instead, where it is one."""
    found: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if not controllers:
            root = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
            found["unified"] = root / rel
        for name in controllers.split(","):
            if name and not name.startswith("name="):
                found[name] = CGROUP_ROOT / name / rel
    if scope:
        found = {k: next((p for p in (v, *v.parents) if p.name == scope), v) for k, v in found.items()}
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def io_weight_to_bfq_v1(io_weight: int) -> int:
    """What systemd 252 writes to blkio.bfq.weight for IOWeight=N on cgroup v1."""
    blkio = min(max(io_weight * 500 // 100, 10), 1000)
    return blkio if blkio <= 100 else 100 + (blkio - 100) * 900 // 9900


def scheduler(path: Path) -> str:
    """The I/O scheduler of the disk that holds `path` ("" when it cannot be told)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return ""
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for candidate in (block / "queue/scheduler", block.resolve().parent / "queue/scheduler"):
        text = _read(candidate)
        if text and "[" in text:
            return text.split("[", 1)[1].split("]", 1)[0]
    return ""


def in_force(pid: int, configured: dict[str, str], data_dir: Path, scope: str = "") -> dict[str, Limit]:
    """Each configured limit (memory_max, cpu_quota, tasks_max, io_weight) as the
    process's cgroups hold it (its `scope` slice's, when given)."""
    where = paths(pid, scope)
    v2 = where.get("unified")
    out: dict[str, Limit] = {}
    for name, wanted in configured.items():
        if name == "memory_max":
            raw = _read(where["memory"] / "memory.limit_in_bytes") if "memory" in where else None
            raw = raw if raw is not None else _read(v2 / "memory.max") if v2 else None
            value = None if raw is None else UNLIMITED if raw == "max" or int(raw) >= 2**62 else raw
            out[name] = Limit(wanted or UNLIMITED, value, "" if raw is not None else "no memory controller here")
        elif name == "cpu_quota":
            cpu = where.get("cpu")
            quota, period = (_read(cpu / "cpu.cfs_quota_us"), _read(cpu / "cpu.cfs_period_us")) if cpu else (None, None)
            if quota is None and v2 and (text := _read(v2 / "cpu.max")):
                quota, period = text.split()
            value = None if quota is None else "" if quota in ("-1", "max") else f"{int(quota) * 100 // int(period)}%"
            out[name] = Limit(wanted, value, "" if quota is not None else "no cpu controller here")
        elif name == "tasks_max":
            raw = _read(where["pids"] / "pids.max") if "pids" in where else _read(v2 / "pids.max") if v2 else None
            out[name] = Limit(wanted, None if raw is None else UNLIMITED if raw == "max" else raw,
                              "" if raw is not None else "no pids controller here")
        elif name == "io_weight":
            out[name] = _io_weight(where, int(wanted), data_dir)
    return out


def _io_weight(where: dict[str, Path], wanted: int, data_dir: Path) -> Limit:
    sched = scheduler(data_dir)
    if "blkio" in where:
        bfq = _read(where["blkio"] / "blkio.bfq.weight")
        if bfq is None:
            return Limit(str(wanted), None, "the blkio controller has no BFQ weight file (the bfq scheduler is not"
                                            " loaded): no I/O weight applies")
        if sched != "bfq":
            return Limit(str(wanted), None, f"the disk holding {data_dir} uses the {sched or 'unknown'} I/O scheduler,"
                                            f" not bfq, so no cgroup I/O weight applies (the cgroup has"
                                            f" blkio.bfq.weight {bfq})")
        expected = io_weight_to_bfq_v1(wanted)
        reason = "" if int(bfq) == expected else f"blkio.bfq.weight is {bfq}, systemd writes {expected} for it"
        return Limit(str(wanted), str(wanted) if not reason else None, reason)
    raw = _read(where["unified"] / "io.weight") if "unified" in where else None
    if raw is None:
        return Limit(str(wanted), None, "no io controller here")
    value = raw.split()[1] if raw.startswith("default") else raw
    if sched not in ("bfq",) and not _read(CGROUP_ROOT / "io.cost.qos"):
        return Limit(str(wanted), None, f"io.weight is {value}, but the disk holding {data_dir} uses the"
                                        f" {sched or 'unknown'} scheduler and io.cost is off: no weight applies")
    return Limit(str(wanted), value)


# --------------------------------------------------------------------------------------
# the builder's usage, for Prometheus (the production builder's audit shipper serves it)
# --------------------------------------------------------------------------------------
def slice_dirs(slice_name: str) -> dict[str, Path]:
    """{controller: directory} of a slice at the root of this host's hierarchies (where
    systemd puts `NAME.slice`), only those that exist; "unified" on cgroup v2."""
    unified = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
    found = {c: CGROUP_ROOT / c / slice_name for c in ("memory", "cpu", "cpuacct", "pids")}
    found["unified"] = unified / slice_name
    return {c: p for c, p in found.items() if p.is_dir()}


def _number(text: str | None) -> float | None:
    if text is None or text == "max":
        return None
    value = float(text)
    return None if value >= 2**62 else value


def _key(path: Path, name: str) -> float | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return float(value)
    return None


def usage(slice_name: str) -> dict[str, float]:
    """The slice's memory (bytes, and its limit), CPU time (seconds), CFS periods,
    throttled periods and time held back, tasks (and their limit), from v1 controllers or v2 files; a value
    this host does not have (or an unlimited limit) is left out."""
    d = slice_dirs(slice_name)
    v2 = d.get("unified")

    def one(controller: str, v1_file: str, v2_file: str) -> float | None:
        if controller in d:
            return _number(_read(d[controller] / v1_file))
        return _number(_read(v2 / v2_file)) if v2 else None

    cpu_stat = d["cpu"] / "cpu.stat" if "cpu" in d else v2 / "cpu.stat" if v2 else None
    cpu = (one("cpuacct", "cpuacct.usage", "-") or 0) / 1e9 if "cpuacct" in d else \
        (_key(v2 / "cpu.stat", "usage_usec") or 0) / 1e6 if v2 else None
    raw = {"memory_bytes": one("memory", "memory.usage_in_bytes", "memory.current"),
           "memory_limit_bytes": one("memory", "memory.limit_in_bytes", "memory.max"),
           "cpu_seconds": cpu,
           "cpu_periods": _key(cpu_stat, "nr_periods") if cpu_stat else None,
           "cpu_throttled_periods": _key(cpu_stat, "nr_throttled") if cpu_stat else None,
           # how long the quota held it back: v1 throttled_time (ns), v2 throttled_usec (µs)
           "cpu_throttled_seconds": ((_key(cpu_stat, "throttled_time") or 0) / 1e9 if "cpu" in d
                                     else (_key(cpu_stat, "throttled_usec") or 0) / 1e6) if cpu_stat else None,
           "tasks": one("pids", "pids.current", "pids.current"),
           "tasks_limit": one("pids", "pids.max", "pids.max")}
    return {k: v for k, v in raw.items() if v is not None}


# (name, type, help) of each series the collector serves, labelled with the slice
USAGE_SERIES = {
    "memory_bytes": ("buildkit_ops_builder_memory_bytes", "gauge",
                     "memory the builder's slice uses: the daemon and its build containers"),
    "memory_limit_bytes": ("buildkit_ops_builder_memory_limit_bytes", "gauge", "the slice's memory limit (memory_max)"),
    "cpu_seconds": ("buildkit_ops_builder_cpu_seconds_total", "counter", "CPU time the slice used"),
    "cpu_periods": ("buildkit_ops_builder_cpu_periods_total", "counter", "CFS periods in which the slice ran"),
    "cpu_throttled_periods": ("buildkit_ops_builder_cpu_throttled_periods_total", "counter",
                              "periods in which the slice hit its CPU quota (cpu_quota) and was throttled"),
    "tasks": ("buildkit_ops_builder_tasks", "gauge", "processes and threads in the slice"),
    "tasks_limit": ("buildkit_ops_builder_tasks_limit", "gauge", "the slice's task limit (tasks_max)"),
}


class SliceCollector:
    """A prometheus_client collector of `usage(slice)`, read at each scrape."""

    def __init__(self, slice_name: str):
        self.slice_name = slice_name

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        found = usage(self.slice_name)
        for key, (name, kind, doc) in USAGE_SERIES.items():
            if key not in found:
                continue
            family = (CounterMetricFamily(name.removesuffix("_total"), doc, labels=["slice"]) if kind == "counter"
                      else GaugeMetricFamily(name, doc, labels=["slice"]))
            family.add_metric([self.slice_name], found[key])
            yield family


class Meter:
    """A cgroup of its own (cgroup v1: memory and cpuacct) that a benchmark puts a builder
    in, daemon and build containers alike (`parent` is what a builder takes as its
    containers' cgroup parent): the peak memory since `reset()` and the CPU seconds used.
    Removed by `close()` once its processes are gone."""

    CONTROLLERS = ("memory", "cpuacct")

    def __init__(self, name: str):
        if not all((CGROUP_ROOT / c / "cgroup.procs").exists() for c in self.CONTROLLERS):
            raise KitError("this host has no cgroup v1 memory controller, which the benchmark reads peak memory from",
                           "run the benchmark on a cgroup v1 (or hybrid) host")
        self.name = name
        self.dirs = {c: CGROUP_ROOT / c / name for c in self.CONTROLLERS}
        for path in self.dirs.values():
            path.mkdir(exist_ok=True)
        self._cpu = 0

    @property
    def parent(self) -> str:
        """The cgroup path a builder's containers go under (a child of this one)."""
        return f"/{self.name}/builds"

    def enter(self) -> None:
        """Move the calling process into the meter (a preexec_fn: its children follow)."""
        for path in self.dirs.values():
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def reset(self) -> None:
        (self.dirs["memory"] / "memory.max_usage_in_bytes").write_text("0")
        self._cpu = int((self.dirs["cpuacct"] / "cpuacct.usage").read_text())

    def read(self) -> tuple[int, float]:
        """(peak memory bytes since reset, CPU seconds since reset)."""
        peak = int((self.dirs["memory"] / "memory.max_usage_in_bytes").read_text())
        cpu = int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) - self._cpu
        return peak, round(cpu / 1e9, 3)

    def close(self) -> None:
        for path in self.dirs.values():
            for child in sorted(path.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    child.rmdir()
                except OSError:
                    pass

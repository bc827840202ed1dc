"""Fresh builders: a new buildkitd with an empty root in a temporary state directory, on
an installation's binaries and with its daemon's environment, under a supervisord of its
own; stopped and removed after use. Cache proofs, warming and benchmarks build on them."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core import layout as layout_mod
from ..core.layout import Layout
from . import service, stack
from .config import BuildkitdConfig, write_config
from .supervisor import Supervisor
from .systemd import Limits


@contextmanager
def fresh_builder(source: Layout, timeout: float = 60) -> Iterator[Layout]:
    """A fresh builder beside `source`: its binaries linked (not copied), its daemon's
    environment but PATH (read from the service definition on disk: e.g. the S3
    credentials file the services beside it ask buildkitd to use), the ci defaults."""
    environment = {k: v for k, v in service.environment_on_disk(source).items() if k != "PATH"}
    state = Path(tempfile.mkdtemp(prefix="bkfresh-", dir="/tmp"))
    try:
        fresh = layout_mod.for_params({"profile": "ci", "state_dir": str(state)})
        fresh.bin_dir.mkdir(parents=True)
        for binary in sorted(source.bin_dir.iterdir()):
            if binary.is_file():
                (fresh.bin_dir / binary.name).symlink_to(binary.resolve())
        write_config(fresh, BuildkitdConfig.from_params({"profile": "ci"}, fresh, service.free_port()), apply=True)
        service.write_service_definition(fresh, "supervisor", Limits(), "", apply=True, daemon_env=environment)
        manager = Supervisor(fresh)
        manager.start()
        service.wait_ready(fresh, manager, timeout)
        yield fresh
    finally:
        stack.down(purge=True, state_dir=str(state), profile="ci")

"""Where things go, per profile: one flat state directory (lab, ci) or the FHS paths of
a build server (production), both rooted at `state_dir` so tests can render a
production tree into a temporary directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ParameterError
from .paths import PROJECT_ROOT

UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    bin_dir: Path
    config_path: Path
    backup_dir: Path
    root_dir: Path
    run_dir: Path
    log_dir: Path
    unit_dir: Path
    style: str

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "buildkitd.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def buildkitd(self) -> Path:
        return self.bin_dir / "buildkitd"

    @property
    def buildctl(self) -> Path:
        return self.bin_dir / "buildctl"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "buildkitd.log"

    @property
    def quarantine_dir(self) -> Path:
        """Where plugins-clean moves Docker CLI plugins (never deletes them)."""
        if self.style == "fhs":
            return self.state_dir / "var/lib/buildkit-ops/quarantine/cli-plugins"
        return self.state_dir / "quarantine/cli-plugins"

    @property
    def supervisor_conf(self) -> Path:
        return self.config_path.parent / "supervisord.conf"

    def check(self) -> None:
        if len(str(self.socket_path)) > UNIX_SOCKET_MAX:
            raise ParameterError(
                f"state_dir {self.state_dir} makes the socket path {len(str(self.socket_path))} bytes long;"
                f" unix sockets allow {UNIX_SOCKET_MAX}",
                "choose a shorter state_dir (for example /tmp/bk)",
            )


def default_state_dir(profile: str) -> Path:
    if profile == "production":
        return Path("/")
    env = os.environ.get("BUILDKIT_OPS_STATE_DIR")
    return Path(env) if env else PROJECT_ROOT / ".lab"


def for_params(params: dict) -> Layout:
    """The layout for a runbook's parameters (profile, state_dir, layout)."""
    profile = params.get("profile", "lab")
    raw = params.get("state_dir") or ""
    state_dir = Path(raw).expanduser() if raw else default_state_dir(profile)
    if not state_dir.is_absolute():
        state_dir = (PROJECT_ROOT / state_dir).resolve()
    style = params.get("layout") or ("fhs" if profile == "production" else "flat")
    s = state_dir
    if style == "fhs":
        layout = Layout(s, s / "usr/local/bin", s / "etc/buildkit/buildkitd.toml", s / "var/backups/buildkit",
                        s / "var/lib/buildkit", s / "run/buildkit", s / "var/log/buildkit",
                        s / "etc/systemd/system", style)
    else:
        layout = Layout(s, s / "bin", s / "etc/buildkitd.toml", s / "etc/backups", s / "lib/buildkit",
                        s / "run", s / "log", s / "etc/systemd", style)
    layout.check()
    return layout

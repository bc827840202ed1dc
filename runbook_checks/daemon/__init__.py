"""buildkitd itself: install, buildkitd.toml, buildctl, the service managers (supervisord,
systemd), the programs beside it, verify, the lab stack and fresh builders. It imports
core only."""

"""Docker CLI plugins: where docker finds them (discovery), how it judges them (metadata),
the audit and its inventory, docker as the oracle, quarantine and restore, the
plugins-clean steps, and docker-buildx with a builder on the kit's buildkitd."""

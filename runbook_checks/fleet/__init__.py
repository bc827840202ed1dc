"""The builder fleet on Kubernetes: the local cluster (binaries, cluster) and the fleet
runbook's steps for any cluster given a kubeconfig (manifests, deploy)."""

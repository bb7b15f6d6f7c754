"""Kubernetes access for the daemon: API clients from kubeconfig or in-cluster, leader election."""

"""Galleon's I/O side: sources, servers, cluster writers, the daemon and the CLI."""

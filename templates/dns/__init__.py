"""The cross-cluster DNS templates: hosts file, zone file and CoreDNS server block (reconciler/dns/render.py)."""

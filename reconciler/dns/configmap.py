"""Where a cluster's CoreDNS configuration lives, and the error every DNS reconcile step raises."""
from __future__ import annotations

from compiler.errors import InputError

NAMESPACE, NAME, KEY = "kube-system", "coredns", "Corefile"
CONFIGMAP = f"{NAMESPACE}/{NAME}"


class DNSError(InputError):
    """A reconcile that cannot go on; the message names the cluster and what to do."""

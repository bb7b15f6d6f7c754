"""``galleon serve``: the per-cluster daemon that reads the source, validates it, serves ADS and
follows changes. A revision with errors is reported and not served; proxies keep the previous one.

In parts, one job each (each module's docstring says which thread owns its state):

- ``options``: what it was asked to do (ServeOptions and the registry, CA, DNS and Lease options);
- ``follow``: notice that the source may have changed and debounce the notices into reloads;
- ``loader``: read the source and judge each revision on a worker thread; the record of what was
  read and served (LoadState), the VIPs kept and quarantined;
- ``live``: follow the live registries (reconciler/registry/) and publish what they change, in EDS
  alone when only endpoints changed; the first publish waits for their clusters' first lists;
- ``publisher``: make an accepted revision the served one (the ADS server, the heap settled, the
  last known good saved);
- ``reconcilers``: the CA and DNS reconcilers of this cluster, and the Lease that elects who writes;
- ``previews``: the status API's Preview against the served revision;
- ``surface``: what it answers (HTTP health, metrics and debug pages, the webhook, the status API);
- ``daemon``: make the parts, start them in order, reload on each change, stop.

The rule: the event loop owns the daemon's state. Work on a worker thread is given what it needs
and returns a value that the loop applies; what two threads share is guarded by a lock.

``serve(options)`` is the entry `galleon serve` calls.
"""
from __future__ import annotations

from .daemon import Daemon, serve
from .options import CaOptions, DnsOptions, LeaseOptions, RegistryOptions, ServeOptions

__all__ = ["CaOptions", "Daemon", "DnsOptions", "LeaseOptions", "RegistryOptions", "ServeOptions", "serve"]

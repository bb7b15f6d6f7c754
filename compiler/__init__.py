"""Galleon's pure core: from a Snapshot of files to findings, a typed mesh and xDS.

Nothing in this package touches the network, the disk (beyond its own package
data: the bundled schemas) or the clock, so the same snapshot always gives
byte-identical output.
"""

from . import native

native.check()

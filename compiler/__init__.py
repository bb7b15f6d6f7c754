"""Galleon's pure core: from a Snapshot of files to findings, a typed mesh and xDS.

Nothing in this package touches the network, the disk (beyond its own package
files: the bundled schemas, and at import the check that its compiled modules
match their sources, native.py) or the clock, so the same snapshot always gives
byte-identical output.
"""

from . import native

native.check()

"""The one exception of the CA package."""


class CAError(Exception):
    """Bad input a person can fix (a missing root, a conflicting policy...): one line, no key material."""

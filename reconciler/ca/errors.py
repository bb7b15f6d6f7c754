"""The one exception of the CA package."""
from compiler.errors import InputError


class CAError(InputError):
    """Bad input a person can fix (a missing root, a conflicting policy...): one line, no key material."""

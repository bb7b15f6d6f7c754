"""The base of the errors that mean bad input."""


class InputError(Exception):
    """Bad input, or a source or cluster that cannot be used: the CLI prints one line and exits 2."""

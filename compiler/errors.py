"""The base of the errors that mean bad input."""


class InputError(Exception):
    """Bad input, or a source or cluster that cannot be used: the CLI prints one line and exits 2."""


def one_line(value: object) -> str:
    """An exception or a message on one line; an exception without a message by its type's name."""
    return " ".join(str(value).split()) or type(value).__name__

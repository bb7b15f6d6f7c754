"""The ``galleon`` command line: a thin dispatcher over one module per command.

Each command module has ``register(commands)``, which adds its subparser (and any subcommands) to
the top-level parser's subparsers and returns it, and ``run(args) -> int``, which runs it. Options
several commands share are added by reconciler/cli/options.py, helpers they share are in
reconciler/cli/common.py.

Exit codes follow DESIGN.md: 0 ok, 1 the configuration has errors, 2 the source (or an argument)
could not be used: any compiler.errors.InputError is one line on stderr, never a traceback.

Every command module is imported to build the parser, so they import what they run inside
``run``: the compiler, the Kubernetes client, cryptography, jinja2 and gRPC take half a second
together, which `galleon status` or `galleon diff --server` should not wait for
(reconciler/defaults.py holds what --help shows).
"""
from __future__ import annotations

import argparse
import sys

from compiler.errors import InputError

from .. import runtime
from . import bootstrap, ca, compile, diff, dns, serve, status, sync, validate
from .common import EXIT_OK, EXIT_UNREADABLE

COMMANDS = (validate, compile, diff, serve, status, sync, ca, dns, bootstrap)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleon",
        description="Galleon turns a Git repository of Istio-style mesh configuration into validated, "
                    "per-cluster Envoy configuration and cluster state for a federation of clusters.",
        epilog="Exit codes: 0 ok, 1 the configuration has errors, 2 the source or arguments cannot be used. "
               "Run 'galleon COMMAND --help' for a command's options.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print galleon's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands).set_defaults(run=command.run)
    return parser


class _Version(argparse.Action):
    """--version: the installed package's version, looked up only when asked (importlib.metadata
    takes longer to import than the parser takes to build)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version
        print(f"galleon {version('galleon')}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process (the tests' way): the process's runtime policy is its own."""
    return _run(build_parser().parse_args(argv))


def run() -> None:
    """The `galleon` program (pyproject's script): the runtime policy (reconciler/runtime.py) is
    chosen here, once, for the command it runs."""
    args = build_parser().parse_args()
    if args.run is serve.run:
        runtime.for_daemon()
        sys.exit(_run(args))  # the daemon's threads are stopped and joined as the interpreter exits
    runtime.for_command()
    runtime.leave(_run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a traceback
        sys.stderr.close()
        return EXIT_OK
    except InputError as exc:
        print(f"galleon: error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE

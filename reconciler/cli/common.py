"""What several commands do: read SOURCE at --rev and validate it, describe a proxy, check the
clusters a command names, report progress, write -o, and the exit codes and UsageError they end with.

Nothing heavy is imported here at the top: every command module imports this one, and all of them
are imported to build the parser, even for `galleon --help`."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, TextIO

from compiler.errors import InputError

from ..defaults import split_address

if TYPE_CHECKING:
    from compiler.findings import Finding
    from compiler.revision import Revision

    from ..parse_cache import ParseCache
    from ..sources import GitCredentials

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
# galleon diff --exit-code, kubectl diff's convention: 0 no changes, 1 changes, above 1 trouble.
EXIT_CHANGES, EXIT_HEAD_INVALID_STRICT = 1, 3


class UsageError(InputError):
    """Arguments that cannot be used together or as given."""


def warn(message: str) -> None:
    print(f"galleon: warning: {message}", file=sys.stderr)


def say(message: str) -> None:
    """Progress for people on a terminal; silent in CI logs and pipes."""
    if sys.stderr.isatty():
        print(f"galleon: {message}", file=sys.stderr, flush=True)


def _progress(received: int, total: int, _bytes: int) -> None:
    if total:
        end = "\n" if received == total else ""
        print(f"\rfetching: {received}/{total} objects", end=end, file=sys.stderr, flush=True)


def credentials(args, progress: bool) -> GitCredentials:
    """How to reach a remote Git SOURCE (add_source's options); fetch progress on a terminal if asked."""
    from ..sources import GitCredentials
    return GitCredentials(token_env=args.git_token_env, username=args.git_username, ssh_key=args.ssh_key,
                          known_hosts=args.known_hosts,
                          progress=_progress if progress and sys.stderr.isatty() else None)


def parse_cache(args) -> ParseCache:
    """The cache of parsed files under --state-dir (none with --no-cache)."""
    from ..parse_cache import ParseCache
    return ParseCache(None if args.no_cache else args.state_dir / "parses", warn)


def read(args) -> Revision:
    """Read SOURCE at --rev and validate it; raises SourceError/UnreadableFile for exit 2."""
    from compiler.revision import load

    from ..sources import SourceError, open_sources
    locations = args.source if isinstance(args.source, list) else [args.source]
    source = open_sources(locations, args.state_dir, credentials(args, True))
    source.refresh()
    snapshot, cache = source.snapshot(args.rev), parse_cache(args)
    _say_uncommitted(source, args.rev)
    if not snapshot.files:  # a mistyped path must not pass for a valid mesh
        at = f" at {args.rev}" if args.rev else ""
        raise SourceError(f"{snapshot.origin}{at}: no .yaml or .yml file (dot-folders are skipped); give the folder "
                          "or Git repository that holds the mesh's configuration")
    result = load(snapshot, stored=cache.stored(snapshot))
    cache.keep(result.parsed)
    return result


def _say_uncommitted(source, rev: str | None) -> None:
    """A checkout is read at its HEAD commit: edits not committed yet are not read, which a pre-commit
    check would otherwise pass over in silence."""
    from ..sources import LocalGitSource
    if rev is not None or not isinstance(source, LocalGitSource):
        return
    changed = source.uncommitted()
    if changed is None:
        warn(f"{source.location} is read at its HEAD commit; whether files changed since cannot be told (its "
             "index cannot be read)")
    elif changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        many = len(changed) != 1
        warn(f"{source.location} is read at its HEAD commit, not as its working tree: {len(changed)} YAML "
             f"file{'s' if many else ''} changed since ({shown}) {'are' if many else 'is'} not read; commit "
             f"{'them' if many else 'it'}, or name the files to read them as they are")


def print_findings(findings: Iterable[Finding], file: TextIO | None = None) -> None:
    """One line each, FILE:LINE: LEVEL CODE KIND NS/NAME: message (to stdout unless ``file``)."""
    for finding in findings:
        print(finding.text(), file=file)


def valid_revision(args, consequence: str) -> Revision | None:
    """SOURCE at --rev, validated; None (its findings printed) when it has errors."""
    from compiler.snapshot import short_revision
    result = read(args)
    if not result.valid:
        print_findings(result.findings, sys.stderr)
        print(f"galleon: {result.snapshot.origin} at {short_revision(result.snapshot.revision)} has errors; "
              f"{consequence}", file=sys.stderr)
        return None
    return result


def clusters_revision(args, consequence: str) -> Revision | None:
    """As valid_revision, for a command that writes to --cluster NAME ... or --all-clusters."""
    one_of(bool(args.cluster), args.all_clusters, "give --cluster NAME (repeatable) or --all-clusters")
    return valid_revision(args, consequence)


def one_of(first: bool, second: bool, choice: str) -> None:
    """A UsageError saying ``choice`` unless exactly one of two options was given."""
    if first and second:
        raise UsageError(f"{choice}, not both")
    if not (first or second):
        raise UsageError(choice)


def check_clusters(wanted: list[str], known) -> None:
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise UsageError(f"--cluster {', '.join(unknown)}: not a Cluster of this revision (clusters: "
                         f"{', '.join(sorted(known)) or 'none'})")


def labels(pairs: list[str]) -> dict[str, str]:
    """--label KEY=VALUE ... as a dict."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {pair!r} is not KEY=VALUE")
        found[key] = value
    return found


def locality(text: str | None) -> str | None:
    """--locality R/Z/S, checked (None when not given)."""
    if text is not None and (len(parts := text.split("/")) > 3 or not all(parts)):
        raise UsageError(f"--locality {text!r} is not REGION[/ZONE[/SUBZONE]]: a locality is a region, optionally "
                         "a zone in it and a subzone in that, separated by /")
    return text


@contextmanager
def writing_output(path: Path) -> Iterator[None]:
    """Around what a command writes to -o PATH: an OSError is a UsageError naming PATH and what is
    wrong with it."""
    try:
        yield
    except FileExistsError:  # made as a folder, but there is a file of that name
        raise UsageError(f"-o {path}: exists and is not a folder") from None
    except OSError as exc:
        file = next((p for p in reversed(path.parents) if p.is_file()), None)
        why = (f"{file} is a file, not a folder" if file
               else f"cannot write {exc.filename or path}: {exc.strerror or exc}")
        raise UsageError(f"-o {path}: {why}") from None


def check_address(address: str, flag: str) -> tuple[str, int]:
    """HOST:PORT as (host, port), or a UsageError naming the flag."""
    try:
        return split_address(address, flag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def channel_to(args):
    """A gRPC channel to ``args.server``: TLS with ``--server-ca`` (and a client certificate with
    ``--server-cert``/``--server-key``), else plaintext. Raises UsageError for unreadable files."""
    import grpc
    if args.server_ca is None:
        if args.server_cert or args.server_key:
            raise UsageError("--server-cert and --server-key need --server-ca (the roots of galleon serve's certificate)")
        return grpc.insecure_channel(args.server)
    if bool(args.server_cert) != bool(args.server_key):
        raise UsageError("--server-cert and --server-key go together")
    try:
        roots = args.server_ca.read_bytes()
        cert = args.server_cert.read_bytes() if args.server_cert else None
        key = args.server_key.read_bytes() if args.server_key else None
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    return grpc.secure_channel(args.server, grpc.ssl_channel_credentials(roots, key, cert))

"""The options several commands share, each group added by one function: which source to read and
how, which clusters a reconcile writes to, how a proxy is described, where the status API is."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

KUBECONFIG_HELP = "kubeconfig for --target kube (default: $KUBECONFIG, ~/.kube/config, else in-cluster)"


def default_state_dir() -> Path:
    if os.environ.get("GALLEON_STATE_DIR"):
        return Path(os.environ["GALLEON_STATE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "galleon"


def add_source(parser: argparse.ArgumentParser, rev: bool = True, files: bool = False) -> None:
    """SOURCE, --rev, the state directory and parse cache, and how remote Git is reached."""
    if files:
        parser.add_argument("source", metavar="SOURCE", nargs="+",
                            help="a local Git repository, a remote Git URL (file://, https://, ssh://, "
                                 "user@host:path) or a plain directory of YAML files; or one or more YAML files, "
                                 "- for standard input (findings name each file as given)")
    elif rev:
        parser.add_argument("source", metavar="SOURCE",
                            help="a local Git repository, a remote Git URL (file://, https://, ssh://, "
                                 "user@host:path) or a plain directory of YAML files")
    else:  # the command names its revisions itself: a Git repository
        parser.add_argument("source", metavar="SOURCE",
                            help="a local Git repository or a remote Git URL (file://, https://, ssh://, "
                                 "user@host:path)")
    if rev:
        parser.add_argument("--rev", default=None, metavar="REV",
                            help="Git revision to read: branch, tag, commit id (full or short), HEAD~2... "
                                 "(default: HEAD; a directory has only its working files)")
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(), metavar="DIR",
                        help="where remote repositories are mirrored, parsed files are cached (parses/), and "
                             "galleon serve keeps the last snapshot it served (default: $GALLEON_STATE_DIR "
                             "or ~/.cache/galleon)")
    parser.add_argument("--no-cache", action="store_true",
                        help="parse every file, neither reading nor writing the cache of parsed files "
                             "(unchanged files are otherwise parsed and checked only once)")
    git = parser.add_argument_group("remote Git sources")
    git.add_argument("--git-token-env", default="GALLEON_GIT_TOKEN", metavar="VAR",
                     help="environment variable holding an HTTPS token (default: GALLEON_GIT_TOKEN)")
    git.add_argument("--git-username", default=None, metavar="USER",
                     help="user name sent with the token or SSH key (default: from the URL, else "
                          "x-access-token for HTTPS and git for SSH)")
    git.add_argument("--ssh-key", type=Path, default=None, metavar="FILE",
                     help="private key for ssh:// and user@host:path URLs; its passphrase, if any, "
                          "in $GALLEON_GIT_SSH_PASSPHRASE")
    git.add_argument("--known-hosts", type=Path, default=None, metavar="FILE",
                     help="known_hosts file to check the SSH server's key against (default: "
                          "~/.ssh/known_hosts); unknown hosts are refused")


def add_kubeconfig(parser, text: str = KUBECONFIG_HELP) -> None:
    """--kubeconfig: how a kube target (or the Lease) reaches the clusters; a parser or an argument group."""
    parser.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE", help=text)


def add_clusters(parser: argparse.ArgumentParser) -> None:
    """Which clusters a reconcile command writes to, and how the kube target reaches them."""
    add_kubeconfig(parser)
    parser.add_argument("--cluster", action="append", default=[], metavar="NAME", help="this cluster (repeatable)")
    parser.add_argument("--all-clusters", action="store_true", help="every Cluster of the revision")


def add_proxy(parser: argparse.ArgumentParser, node_id_default: str | None) -> None:
    """How a proxy is described, the way Istio identifies one (compile and bootstrap)."""
    parser.add_argument("--cluster", required=True, metavar="NAME", help="the Cluster the proxy runs in")
    default = f" (default: {node_id_default}, a sidecar in namespace default)" if node_id_default else ""
    parser.add_argument("--node-id", required=node_id_default is None, default=node_id_default, metavar="ID",
                        help="Istio node id: sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, or router~... "
                             "for a gateway; its first part is the proxy's role and its last the namespace" + default)
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the proxy's workload, matched by Gateway and Sidecar selectors (repeatable)")
    parser.add_argument("--locality", default=None, metavar="R/Z/S",
                        help="the proxy's locality (default: its cluster's)")


def add_status_api(parser: argparse.ArgumentParser) -> None:
    """Where a running galleon serve's status API is, and how its answer is shown (status and sync)."""
    parser.add_argument("--server", default="127.0.0.1:15010", metavar="HOST:PORT",
                        help="galleon serve's ADS address, where the status API is served (default: 127.0.0.1:15010)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or JSON")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up after SECONDS (default: 60)")
    add_server_tls(parser)


def add_server_tls(parser) -> None:
    """How a client reaches a galleon serve that serves TLS (--tls-cert), with mutual TLS (--client-ca)."""
    parser.add_argument("--server-ca", type=Path, default=None, metavar="FILE",
                        help="PEM roots that sign galleon serve's certificate (turns TLS on)")
    parser.add_argument("--server-cert", type=Path, default=None, metavar="FILE",
                        help="this client's PEM certificate, for a daemon that asks for one (--client-ca)")
    parser.add_argument("--server-key", type=Path, default=None, metavar="FILE", help="its PEM private key")

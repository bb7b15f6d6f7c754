"""Remote Git over SSH against a real OpenSSH server (Debian's sshd) on loopback.

Proves key authentication and host-key checking against --known-hosts:
an unknown or changed host key is refused before anything is fetched.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pygit2
import pytest

from reconciler.sources import GitCredentials, SourceError, open_source
from tests.ports import free_port

pytestmark = pytest.mark.e2e

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.fail("this test needs Debian's openssh-server and root (make test installs it)")
    base = tmp_path_factory.mktemp("sshd")
    host_key = keygen(base / "host_key")
    client_key = keygen(base / "client_key")
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    port = free_port()
    config = base / "sshd_config"
    config.write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {base}/authorized_keys
PidFile {base}/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode()}")
    host_line = (base / "host_key.pub").read_text().split()
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_line[0]} {host_line[1]}\n")
    yield {"port": port, "client_key": client_key, "known_hosts": known_hosts, "base": base}
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture
def remote(tmp_path):
    """A bare repository with one commit, served over SSH by path."""
    bare = pygit2.init_repository(str(tmp_path / "mesh.git"), bare=True, initial_head="main")
    sig = pygit2.Signature("t", "t@example.com", 1_700_000_000, 0)
    builder = bare.TreeBuilder()
    builder.insert("a.yaml", bare.create_blob(b"x: 1\n"), pygit2.enums.FileMode.BLOB)
    commit = bare.create_commit("refs/heads/main", sig, sig, "one", builder.write(), [])
    return tmp_path / "mesh.git", commit


def url(sshd, path: Path) -> str:
    return f"ssh://root@127.0.0.1:{sshd['port']}{path}"


def test_fetch_with_key_and_known_host(sshd, remote, tmp_path):
    path, commit = remote
    creds = GitCredentials(ssh_key=sshd["client_key"], known_hosts=sshd["known_hosts"])
    source = open_source(url(sshd, path), tmp_path / "state", creds)
    assert source.refresh() is True
    snapshot = source.snapshot()
    assert snapshot.revision == str(commit) and snapshot.files == {"a.yaml": b"x: 1\n"}
    assert source.refresh() is False


def test_scp_like_and_ssh_urls_are_remote(tmp_path):
    from reconciler.sources import RemoteGitSource, is_remote
    for location in ("git@github.com:org/mesh.git", "ssh://git@host:2222/org/mesh.git", "https://h/x.git"):
        assert is_remote(location)
        assert isinstance(open_source(location, tmp_path), RemoteGitSource)
    assert not is_remote("/srv/mesh") and not is_remote("C:/x") and not is_remote("relative/path")


def test_unknown_host_key_is_refused(sshd, remote, tmp_path):
    path, _ = remote
    keygen(tmp_path / "other_host")
    other = (tmp_path / "other_host.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd['port']} {other[0]} {other[1]}\n")
    creds = GitCredentials(ssh_key=sshd["client_key"], known_hosts=wrong)
    source = open_source(url(sshd, path), tmp_path / "state", creds)
    with pytest.raises(SourceError, match="could not be verified"):
        source.refresh()


def test_missing_key_says_what_to_pass(sshd, remote, tmp_path):
    path, _ = remote
    source = open_source(url(sshd, path), tmp_path / "state", GitCredentials(known_hosts=sshd["known_hosts"]))
    with pytest.raises(SourceError, match="--ssh-key"):
        source.refresh()


def test_unauthorized_key_fails_cleanly(sshd, remote, tmp_path):
    path, _ = remote
    creds = GitCredentials(ssh_key=keygen(tmp_path / "stranger"), known_hosts=sshd["known_hosts"])
    source = open_source(url(sshd, path), tmp_path / "state", creds)
    with pytest.raises(SourceError, match="authentication failed"):
        source.refresh()

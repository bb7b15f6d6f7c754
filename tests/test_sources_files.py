"""Files named on the command line, and standard input, as a source (reconciler/sources/files.py)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.sources import FilesSource, SourceError, open_sources
from reconciler.sources.files import STDIN_NAME

ROOT = Path(__file__).resolve().parent.parent
SERVICE = b"apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n"
BROKEN = b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: shop}\n" \
         b"spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: nowhere}\n"


def galleon(*args, stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=120)


def test_files_keep_the_names_they_were_given_by(tmp_path: Path):
    (tmp_path / "a.yaml").write_bytes(SERVICE)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.yml").write_bytes(BROKEN)
    source = open_sources([str(tmp_path / "a.yaml"), str(sub / "b.yml"), str(tmp_path / "a.yaml")])
    snapshot = source.snapshot()
    assert sorted(snapshot.files) == sorted([str(tmp_path / "a.yaml"), str(sub / "b.yml")])  # each once
    assert snapshot.revision.startswith("sha256:")
    assert FilesSource([str(sub / "b.yml"), str(tmp_path / "a.yaml")]).snapshot().revision == snapshot.revision


def test_standard_input_is_read_once_and_named_stdin():
    source = FilesSource(["-"], stdin=io.BytesIO(SERVICE))
    assert source.snapshot().files == {STDIN_NAME: SERVICE}
    assert source.snapshot().files == {STDIN_NAME: SERVICE}  # not read again (it is gone)
    with pytest.raises(SourceError, match="more than once"):
        FilesSource(["-", "-"])


def test_a_missing_file_a_directory_among_files_and_a_revision_are_one_line_errors(tmp_path: Path):
    with pytest.raises(SourceError, match="cannot read"):
        FilesSource([str(tmp_path / "missing.yaml")]).snapshot()
    (tmp_path / "a.yaml").write_bytes(SERVICE)
    with pytest.raises(SourceError, match="read alone"):
        open_sources([str(tmp_path), str(tmp_path / "a.yaml")])
    with pytest.raises(SourceError, match="no revisions"):
        FilesSource([str(tmp_path / "a.yaml")]).snapshot("main")


def test_galleon_validate_takes_files_and_standard_input_and_names_them_as_given(tmp_path: Path):
    (tmp_path / "svc.yaml").write_bytes(SERVICE)
    (tmp_path / "vs.yaml").write_bytes(BROKEN)
    result = galleon("validate", "svc.yaml", "-", stdin=BROKEN, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.decode().startswith(f"{STDIN_NAME}:8: error IST0101 VirtualService shop/vs:")
    result = galleon("validate", "svc.yaml", "vs.yaml", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout.decode().startswith("vs.yaml:8: error IST0101")
    # With the Service, the host the VirtualService names is found
    fixed = BROKEN.replace(b"host: nowhere", b"host: a")
    result = galleon("validate", "svc.yaml", "-", stdin=fixed, cwd=tmp_path)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_a_fifo_named_on_the_command_line_is_read_like_a_file(tmp_path: Path):
    fifo = tmp_path / "piped.yaml"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as pipe:
            pipe.write(SERVICE)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        result = galleon("validate", fifo)
    finally:
        writer.join(timeout=10)
    assert result.returncode == 0, result.stderr


def test_galleon_serve_refuses_a_file(tmp_path: Path):
    (tmp_path / "a.yaml").write_bytes(SERVICE)
    result = galleon("serve", tmp_path / "a.yaml", "--cluster", "c", "--ads", "127.0.0.1:0", "--http", "127.0.0.1:0")
    assert result.returncode == 2 and b"not a file" in result.stderr

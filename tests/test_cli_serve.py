"""`galleon bootstrap` and `galleon serve` as a user runs them: real processes, output, exit codes."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time

import pygit2
import yaml

from compiler.snapshot import Snapshot
from reconciler.state import LastGood, source_identity
from tests.conftest import SAMPLE_REPO
from tests.e2e.daemon import Galleon
from tests.e2e.envoy import wait_for
from tests.test_cli import galleon, one_line_error

NODE = "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"


def test_bootstrap_describes_the_node_as_istio_does():
    result = galleon("bootstrap", "--cluster", "cluster-c", "--node-id", NODE, "--label", "app=web",
                     "--label", "version=v2", "--locality", "eu-west/eu-west-1a/rack-4", "--network", "network-2",
                     "--ads", "galleon.istio-system.svc:15010")
    assert result.returncode == 0, result.stderr
    boot = yaml.safe_load(result.stdout)
    node = boot["node"]
    assert node["id"] == NODE
    assert node["metadata"] == {"CLUSTER_ID": "cluster-c", "NETWORK": "network-2",
                                "LABELS": {"app": "web", "version": "v2"}}
    assert node["locality"] == {"region": "eu-west", "zone": "eu-west-1a", "subZone": "rack-4"}
    ads = boot["dynamicResources"]["adsConfig"]
    assert ads["apiType"] == "GRPC" and ads["setNodeOnFirstMessageOnly"] is True
    xds = {c["name"]: c for c in boot["staticResources"]["clusters"]}["xds-grpc"]
    assert xds["type"] == "STRICT_DNS"  # a host name, resolved by Envoy
    address = xds["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]
    assert address == {"address": "galleon.istio-system.svc", "portValue": 15010}
    assert "http2ProtocolOptions" in json.dumps(xds)
    assert boot["admin"]["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": 15000}


def test_bootstrap_delta_and_listen_address():
    result = galleon("bootstrap", "--cluster", "cluster-a", "--node-id", NODE, "--delta",
                     "--listen-address", "127.0.0.1")
    boot = yaml.safe_load(result.stdout)
    assert boot["dynamicResources"]["adsConfig"]["apiType"] == "DELTA_GRPC"
    assert boot["node"]["metadata"]["GALLEON_LISTEN_ADDRESS"] == "127.0.0.1"


def test_bootstrap_refuses_bad_input_in_one_line():
    one_line_error(galleon("bootstrap", "--cluster", "a", "--node-id", "web-1"), "web-1", "sidecar~")
    one_line_error(galleon("bootstrap", "--cluster", "a", "--node-id", NODE, "--ads", "nowhere"), "--ads")
    one_line_error(galleon("bootstrap", "--cluster", "a", "--node-id", NODE, "--label", "app"), "KEY=VALUE")
    one_line_error(galleon("bootstrap", "--cluster", "a", "--node-id", NODE, "--locality", "eu/eu-1a/rack-4/x"),
                   "--locality", "REGION[/ZONE[/SUBZONE]]")
    one_line_error(galleon("bootstrap", "--cluster", "a", "--node-id", NODE, "--listen-address", "localhost"),
                   "--listen-address")


def last_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("galleon: error: "), last
    for word in words:
        assert word in last, last


def test_serve_refuses_what_it_cannot_serve(tmp_path):
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-x", "--ads", "127.0.0.1:0", "--http",
                            "127.0.0.1:0"), "cluster-x", "cluster-a, cluster-b, cluster-c")
    last_line_error(galleon("serve", tmp_path / "nope", "--cluster", "a"), "no such file")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "key"], check=True)
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--verify-ssh-key", tmp_path / "key.pub"),
                    "commit signatures need a Git source")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "a", "--poll", "0"), "--poll")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--rev", "main", "--ads", "127.0.0.1:0",
                            "--http", "127.0.0.1:0"), "--rev main needs a Git repository")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "a", "--ads", "127.0.0.1:99999"),
                    "--ads '127.0.0.1:99999': port 99999 is out of range (1-65535, or 0 for any free port)")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "a", "--views-memory", "0"), "--views-memory")
    (tmp_path / "file").write_text("")
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http",
                            "127.0.0.1:0", "--state-dir", tmp_path / "file"),
                    f"--state-dir {tmp_path / 'file'}: cannot keep the last known good snapshot", "Not a directory")
    for flag in ("--registry-quiet", "--registry-max-wait", "--registry-sync-timeout"):
        last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "a", flag, "-1"), flag, "negative")
    for quiet, most in (("--debounce", "--debounce-max"), ("--registry-quiet", "--registry-max-wait")):
        last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "a", quiet, "5", most, "1"),
                        f"{most} 1 is shorter than {quiet} 5", f"give {most} at least 5")
    # a longer quiet time alone raises the cap it has by default: refused only later, for cluster-x
    last_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-x", "--debounce", "15", "--registry-quiet",
                            "5", "--ads", "127.0.0.1:0", "--http", "127.0.0.1:0"), "no Cluster named 'cluster-x'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # One line each, without gRPC's own log line before it.
        one_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", f"127.0.0.1:{port}",
                               "--http", "127.0.0.1:0"), f"--ads: cannot listen on 127.0.0.1:{port}",
                       "choose another address")
        one_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:0",
                               "--http", f"127.0.0.1:{port}"),
                       f"--http: cannot listen on 127.0.0.1:{port}: Address already in use; choose another address")
    one_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--ads", "127.0.0.1:15999",
                           "--http", "127.0.0.1:15999"), "--ads and --http are both 127.0.0.1:15999")


def test_serve_says_what_is_wrong_with_a_registry(tmp_path):
    (tmp_path / "notes.txt").write_text("a file\n")
    for registry, words in ((f"dir:{tmp_path}/notes.txt", ["notes.txt is a file, not a folder"]),
                            (f"dir:{tmp_path}/nope", [f"no folder {tmp_path}/nope"]),
                            ("kub", ["--registry kub:", "did you mean kube?"]),
                            ("dir:", ["the path after dir: is empty"]),
                            ("dir", ["give dir:PATH"])):
        one_line_error(galleon("serve", SAMPLE_REPO, "--cluster", "cluster-a", "--registry", registry), *words)


def test_serve_follows_a_directory_and_keeps_the_last_valid_revision(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for path in SAMPLE_REPO.rglob("*.yaml"):
        target = repo / path.relative_to(SAMPLE_REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    with Galleon(repo, "cluster-a") as daemon:
        status, body = daemon.get("/readyz")
        first = daemon.json("/debug/configz")["served_revision"]
        assert status == 200 and first in body and first.startswith("sha256:")
        assert daemon.get("/healthz") == (200, "ok\n")
        assert daemon.event("serving")["views_memory_mb"] == 1024  # the default, said at start

        # An edit is picked up.
        ratings = repo / "running" / "cluster-a.yaml"
        ratings.write_text(ratings.read_text().replace("[10.1.3.1]", "[10.1.3.99]"))
        second = wait_for(lambda: (r := daemon.json("/debug/configz")["served_revision"]) != first and r, 5,
                          lambda: daemon.log())

        # A broken revision is reported and not served.
        ratings.write_text(ratings.read_text() + "\n---\nkind: [\n")
        configz = wait_for(lambda: (c := daemon.json("/debug/configz"))["last_revision_seen"] not in (first, second)
                           and c, 5, lambda: daemon.log())
        assert configz["served_revision"] == second
        assert [f["code"] for f in configz["findings"] if f["level"] == "error"] == ["GAL0001"]
        assert daemon.get("/readyz")[0] == 200
        metrics = daemon.get("/metrics")[1]
        assert "galleon_snapshot_valid 0.0" in metrics
        assert 'galleon_source_loads_total{outcome="invalid"} 1.0' in metrics
        assert daemon.event("revision rejected")["errors"] == 1

        # SIGHUP re-reads; nothing changed, nothing published.
        published = daemon.count("configuration published")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.event("change noticed", reason="SIGHUP"), 5)
        time.sleep(0.3)
        assert daemon.count("configuration published") == published

        assert daemon.get("/debug/config_dump")[0] == 400
        assert daemon.get("/debug/config_dump?proxyID=nobody")[0] == 404
        assert daemon.get("/nope")[0] == 404
        assert daemon.stop() == 0
    assert daemon.event("stopped")


def test_bootstrap_for_a_proxyless_grpc_client():
    result = galleon("bootstrap", "--grpc", "--cluster", "cluster-a", "--node-id", NODE, "--ads", "10.0.0.2:15010",
                     "--certificate-dir", "/etc/certs")
    assert result.returncode == 0, result.stderr
    boot = json.loads(result.stdout)
    assert boot["xds_servers"][0]["server_uri"] == "10.0.0.2:15010"
    assert boot["node"]["metadata"]["GENERATOR"] == "grpc"
    assert boot["certificate_providers"]["default"]["config"]["certificate_file"] == "/etc/certs/cert-chain.pem"
    one_line_error(galleon("bootstrap", "--grpc", "--delta", "--cluster", "a", "--node-id", NODE), "state of the world")


def test_serve_polls_a_remote_repository(tmp_path):
    """A remote (here file://) is mirrored into the state directory and fetched every --poll seconds."""
    from tests import gitutil
    origin = gitutil.init(tmp_path / "origin", bare=True)
    files = {p.relative_to(SAMPLE_REPO).as_posix(): p.read_bytes() for p in SAMPLE_REPO.rglob("*.yaml")}
    first = gitutil.commit(origin, files)
    with Galleon(f"file://{tmp_path / 'origin'}", "cluster-a", "--poll", "0.2",
                 state_dir=tmp_path / "state") as daemon:
        assert daemon.json("/debug/configz")["served_revision"] == str(first)
        files["bookinfo/ratings.yaml"] = files["bookinfo/ratings.yaml"].replace(b"10.1.3.1", b"10.1.3.77")
        second = gitutil.commit(origin, files)
        wait_for(lambda: daemon.json("/debug/configz")["served_revision"] == str(second), 5, lambda: daemon.log())
        assert daemon.event("change noticed", reason="poll")


def test_compile_shows_a_proxyless_grpc_clients_view():
    result = galleon("compile", SAMPLE_REPO, "--cluster", "cluster-a", "--grpc", "--node-id",
                     "sidecar~10.1.1.1~client.bookinfo~bookinfo.svc.cluster.local")
    assert result.returncode == 0, result.stderr
    listeners = json.loads(result.stdout)["listeners"]
    assert "reviews.bookinfo.svc.cluster.local:9080" in [listener["name"] for listener in listeners]
    assert all("apiListener" in listener for listener in listeners)


def test_a_restarted_daemon_reads_its_files_back_from_the_parse_cache(tmp_path):
    state = tmp_path / "state"
    files = len(list(SAMPLE_REPO.rglob("*.yaml")))
    served = []
    for run, cached in (("first", 0), ("restart", files), ("--no-cache", 0)):
        extra = ["--no-cache"] if run == "--no-cache" else []
        with Galleon(SAMPLE_REPO, "cluster-a", *extra, state_dir=state) as daemon:
            validated = daemon.event("revision validated")
            assert validated["files_cached"] == cached, (run, daemon.log())
            configz = daemon.json("/debug/configz")
            served.append((validated["objects"], configz["served_revision"], configz["findings"]))
            assert daemon.stop() == 0
    assert served[0] == served[1] == served[2] and served[0][0] > 20
    assert len(list((state / "parses").rglob("*/*/*"))) == files


def served_before_moved_away(tmp_path, source) -> tuple[str, object]:
    """Serve ``source`` once so the state directory keeps its snapshot, then move it away: what was
    served, and the path it is at now."""
    state = tmp_path / "state"
    with Galleon(source, "cluster-a", state_dir=state) as daemon:
        first = daemon.json("/debug/configz")["served_revision"]
        wait_for(lambda: (state / "last-good" / "cluster-a.json").exists(), 5, lambda: daemon.log())
    return first, source.rename(tmp_path / "aside")


def missing_and_serving(daemon: Galleon, revision: str) -> None:
    status, body = daemon.get("/readyz")
    assert status == 200, body
    assert f"serving {revision} from the state directory (last known good)" in body, body
    assert "the source path is missing" in body and "no such file or directory" in body, body
    configz = daemon.json("/debug/configz")
    assert (configz["served_revision"], configz["from_state_dir"]) == (revision, True), configz
    # Logged once it is published: /readyz may say so first.
    wait_for(lambda: daemon.event("serving the last known good snapshot from the state directory; the source cannot "
                                  "be read"), 5, lambda: daemon.log())


def test_a_directory_missing_at_start_serves_the_last_good_snapshot_until_it_appears(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    first, aside = served_before_moved_away(tmp_path, repo)
    with Galleon(repo, "cluster-a", state_dir=tmp_path / "state") as daemon:
        missing_and_serving(daemon, first)
        ratings = aside / "running" / "cluster-a.yaml"
        ratings.write_text(ratings.read_text().replace("[10.1.3.1]", "[10.1.3.99]"))
        aside.rename(repo)
        second = wait_for(lambda: (r := daemon.json("/debug/configz")["served_revision"]) != first and r, 5,
                          lambda: daemon.log())
        assert daemon.event("the source path appeared")
        assert daemon.get("/readyz") == (200, f"ready: serving {second}\n")
        configz = daemon.json("/debug/configz")
        assert (configz["from_state_dir"], configz["source_error"]) == (False, None), configz
        # From then on it is watched as any directory.
        ratings = repo / "running" / "cluster-a.yaml"
        ratings.write_text(ratings.read_text().replace("[10.1.3.99]", "[10.1.3.98]"))
        wait_for(lambda: daemon.json("/debug/configz")["served_revision"] not in (first, second), 5,
                 lambda: daemon.log())


def test_a_git_repository_missing_at_start_serves_the_last_good_snapshot_until_it_appears(tmp_path):
    from tests import gitutil
    repo = gitutil.init(tmp_path / "repo")
    files = {p.relative_to(SAMPLE_REPO).as_posix(): p.read_bytes() for p in SAMPLE_REPO.rglob("*.yaml")}
    first = gitutil.commit(repo, files)
    assert served_before_moved_away(tmp_path, tmp_path / "repo")[0] == str(first)
    with Galleon(tmp_path / "repo", "cluster-a", state_dir=tmp_path / "state") as daemon:
        missing_and_serving(daemon, str(first))
        (tmp_path / "aside").rename(tmp_path / "repo")
        wait_for(lambda: daemon.get("/readyz") == (200, f"ready: serving {first}\n"), 5, lambda: daemon.log())
        # From then on its refs are watched: a commit is served.
        files["bookinfo/ratings.yaml"] = files["bookinfo/ratings.yaml"].replace(b"10.1.3.1", b"10.1.3.77")
        second = gitutil.commit(pygit2.Repository(str(tmp_path / "repo")), files)
        wait_for(lambda: daemon.json("/debug/configz")["served_revision"] == str(second), 5, lambda: daemon.log())


def test_a_source_missing_at_start_without_a_servable_last_good_snapshot_exits_2(tmp_path):
    state = tmp_path / "state"
    serve = ("serve", tmp_path / "nope", "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--state-dir", state)
    last_line_error(galleon(*serve), "nope: no such file or directory",
                    "no last known good snapshot of cluster-a")
    LastGood(state, "cluster-a", source_identity(str(tmp_path / "nope"), None)).save(
        Snapshot("sha256:0", {"a.yaml": b"kind: [\n"}, "elsewhere"))
    last_line_error(galleon(*serve), "nope: the source path is missing",
                    "the last known good snapshot in the state directory cannot be served either")


def test_a_last_good_snapshot_of_another_source_is_never_served(tmp_path):
    """Daemons of one cluster name share the state directory (the default one, ~/.cache/galleon): the
    snapshot one served stands in for no other source, nor for another revision of it."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    served_before_moved_away(tmp_path, repo)
    for source, rev in ((tmp_path / "other", ()), (repo, ("--rev", "main"))):
        result = galleon("serve", source, *rev, "--cluster", "cluster-a", "--ads", "127.0.0.1:0", "--http",
                         "127.0.0.1:0", "--state-dir", tmp_path / "state")
        last_line_error(result, f"{source}: the source path is missing",
                        "the last known good snapshot in the state directory cannot be served either")
        (refused,) = [json.loads(line) for line in result.stderr.splitlines()[:-1]
                      if "last known good snapshot is of another source" in line]
        assert (refused["snapshot_of"], refused["source"]) == (str(repo), " ".join([str(source), *rev])), refused


def test_what_libraries_log_is_in_the_daemons_own_lines():
    """The kubernetes client logs a failed exec credential plugin with logging.error (which, unset, prints
    "ERROR:root:..."), urllib3 warns through warnings: both come out as the daemon's JSON lines."""
    import json
    import subprocess
    import sys
    script = ("import logging, warnings\nfrom reconciler import logs\nlogs.configure('info', json_lines=True)\n"
              "logging.error('[Errno 2] No such file or directory: %r', '/nonexistent/aws-iam')\n"
              "warnings.warn('unverified HTTPS request', FutureWarning)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["level"], line["logger"]) for line in lines] == [("error", "root"), ("warning", "py.warnings")]
    assert lines[0]["event"] == "[Errno 2] No such file or directory: '/nonexistent/aws-iam'"
    assert "unverified HTTPS request" in lines[1]["event"]

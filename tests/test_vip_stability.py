"""VIP stability: over 100 random commits adding and removing services, no surviving name ever changes address.

A real Git repository (pygit2) gets 100 commits, each adding and/or removing ServiceEntries under
``global/`` (and now and then changing an unrelated field). Every commit is read back through the Git
source, validated, and given to the real DNS reconcile path against a ``dir:`` target: cluster-a at
every commit, cluster-b at every 3rd and cluster-c at every 7th, so their stale blocks still hold the
addresses of names the mesh has dropped. The pool is small (a /26: 62 addresses for 60 candidate
names, about 28 at a time), so hashes collide often and stickiness is what keeps names in place.
"""
from __future__ import annotations

import ipaddress
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.model import build_mesh
from compiler.revision import load
from compiler.view import make_view
from compiler.vips import Pool
from compiler.xds import compile_view
from compiler.xds_types import LISTENER, ROUTE
from reconciler.dns import DirTarget, Outcome, read_entries, reconcile_clusters
from reconciler.sources import LocalGitSource, open_source
from tests.conftest import ONE_CLUSTER, mesh_from
from tests.gitutil import commit, init

CIDR = "240.0.0.0/26"
CLUSTERS = ["cluster-a", "cluster-b", "cluster-c"]
PERIODS = {"cluster-a": 1, "cluster-b": 3, "cluster-c": 7}  # reconciled at the commits that are multiples
NAMESPACES = ["bookinfo", "shop", "payments"]
CANDIDATES = 60
COMMITS = 100
SEED = 20240611

MESH = """\
apiVersion: galleon.io/v1alpha1
kind: MeshNetworks
metadata: {name: mesh-networks, namespace: istio-system}
spec:
  networks:
    network-1:
      endpoints: [{fromRegistry: cluster-a}, {fromRegistry: cluster-b}]
      gateways: [{address: 192.0.2.10, port: 15443}]
    network-2:
      endpoints: [{fromRegistry: cluster-c}]
      gateways: [{address: 192.0.2.20, port: 15443}]
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-a, namespace: istio-system}
spec: {network: network-1, locality: us-east/us-east-1a}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-b, namespace: istio-system}
spec: {network: network-1, locality: us-east/us-east-1b}
---
apiVersion: galleon.io/v1alpha1
kind: Cluster
metadata: {name: cluster-c, namespace: istio-system}
spec: {network: network-2, locality: eu-west/eu-west-1a}
"""


def mesh_config(trust: int) -> str:
    return (f"apiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh, namespace: istio-system}}\n"
            f"spec: {{trustDomain: example{trust}.org, vipCidr: {CIDR}}}\n")


def name_of(i: int) -> str:
    return f"svc{i:02d}"


def host_of(i: int) -> str:
    return f"{name_of(i)}.{NAMESPACES[i % 3]}.global"


def service_entry(i: int, version: int) -> str:
    port = "{number: 9080, name: http, protocol: HTTP}" if i % 2 else "{number: 5432, name: tcp, protocol: TCP}"
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name_of(i)}, namespace: {NAMESPACES[i % 3]}}}
spec:
  hosts: [{host_of(i)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{port}]
  endpoints:
  - address: 10.{i % 3 + 1}.{i}.{version % 250 + 1}
    labels: {{topology.istio.io/cluster: {CLUSTERS[i % 3]}}}
"""


@dataclass
class Revision:
    step: int
    revision: str
    objects: list
    hosts: set[str]


@dataclass
class History:
    repo_path: Path
    revisions: list[Revision]
    unrelated: int  # commits that also changed a field unrelated to VIPs


def files_of(present: dict[int, int], trust: int) -> dict[str, bytes]:
    files = {"mesh/mesh.yaml": MESH.encode(), "mesh/config.yaml": mesh_config(trust).encode()}
    files.update({f"global/{name_of(i)}.yaml": service_entry(i, v).encode() for i, v in present.items()})
    return files


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    """The repository and its 101 revisions (the base and 100 commits), read back through the Git source."""
    path = tmp_path_factory.mktemp("mesh-repo")
    repo = init(path)
    rng = random.Random(SEED)
    present = {i: 0 for i in rng.sample(range(CANDIDATES), 14)}  # candidate -> its unrelated field's version
    trust, unrelated = 0, 0
    commits = [(commit(repo, files_of(present, trust), message="base"), set(present))]
    for step in range(1, COMMITS + 1):
        touched: set[int] = set()  # each change adds or removes another file
        for _ in range(rng.randint(1, 3)):
            absent = sorted(set(range(CANDIDATES)) - set(present) - touched)
            # drift around 28 names, between 6 and 40
            if absent and (len(present) < 6 or (len(present) < 40 and rng.random() < 0.5 + (28 - len(present)) / 40)):
                added = rng.choice(absent)
                touched.add(added)
                present[added] = 0
            else:
                gone = rng.choice(sorted(set(present) - touched))
                touched.add(gone)
                del present[gone]
        if rng.random() < 0.3:
            unrelated += 1
            if rng.random() < 0.5:
                present[rng.choice(sorted(present))] += 1  # an endpoint address
            else:
                trust += 1  # the MeshConfig's trust domain
        commits.append((commit(repo, files_of(present, trust), message=f"step {step}"), set(present)))
    # The working tree was never checked out: only the object database has the files.
    assert [p.name for p in path.iterdir()] == [".git"]
    source = open_source(str(path))
    assert isinstance(source, LocalGitSource)
    revisions = []
    for step, (oid, indexes) in enumerate(commits):
        snapshot = source.snapshot(str(oid))
        assert snapshot.revision == str(oid)
        assert sum(p.startswith("global/") for p in snapshot.files) == len(indexes)
        result = load(snapshot)
        assert result.valid, "\n".join(f.text() for f in result.findings)
        revisions.append(Revision(step, snapshot.revision, result.objects, {host_of(i) for i in indexes}))
    return History(path, revisions, unrelated)


def test_history_is_what_the_scenario_needs(history):
    sizes = [len(r.hosts) for r in history.revisions]
    assert len(history.revisions) == COMMITS + 1
    assert max(sizes) <= CANDIDATES <= Pool(CIDR).size  # consistent clusters never need more than 60 addresses
    assert min(sizes) >= 5 and max(sizes) >= 20
    changes = [len(a.hosts ^ b.hosts) for a, b in zip(history.revisions, history.revisions[1:])]
    assert all(1 <= c <= 3 for c in changes)
    assert sum(1 for a, b in zip(history.revisions, history.revisions[1:]) if a.hosts - b.hosts) > 30  # removals
    assert sum(1 for a, b in zip(history.revisions, history.revisions[1:]) if b.hosts - a.hosts) > 30  # additions
    assert history.unrelated > 10


def test_dns_reconcile_keeps_every_surviving_name_in_place(history, tmp_path):
    target = DirTarget(tmp_path / "clusters")
    pool = Pool(CIDR)
    last: dict[str, dict[str, str]] = {c: {} for c in CLUSTERS}  # each cluster's block at its last reconcile
    figures = Counter()
    for rev in history.revisions:
        mesh = build_mesh(rev.objects, rev.revision)
        assert mesh.settings.vip_cidr == CIDR
        assert set(mesh.vips.addresses) == rev.hosts and mesh.vips.unassigned == ()
        clusters = [c for c in CLUSTERS if rev.step % PERIODS[c] == 0]
        # The blocks as every cluster holds them at this moment, changed as each reconcile writes.
        moment = {c: read_entries(target, c) for c in CLUSTERS}
        assert moment == last
        done = []
        for cluster, outcome in reconcile_clusters(target, mesh.vips, mesh.settings.vip_cidr, clusters=clusters,
                                                   every=CLUSTERS, create=True):
            assert isinstance(outcome, Outcome), f"step {rev.step} {cluster}: {outcome}"
            done.append(cluster)
            after = read_entries(target, cluster)
            before = moment[cluster]
            assert after == outcome.entries
            assert set(after) == rev.hosts and outcome.unassigned == ()
            assert all(address in pool for address in after.values())
            # 1. Within the cluster, a name in two consecutive reconciles keeps its address.
            for name in after.keys() & before.keys():
                assert after[name] == before[name], f"step {rev.step} {cluster}: {name} moved"
            assert outcome.moved == {}
            figures["kept"] += len(after.keys() & before.keys())
            # 2. A name new to the cluster never takes an address any block holds under another name.
            in_use = {address for entries in moment.values() for address in entries.values()}
            for name in sorted(after.keys() - before.keys()):
                address = after[name]
                holders = {(c, holder) for c, entries in moment.items() for holder, held in entries.items()
                           if held == address and holder != name}
                assert not holders, f"step {rev.step} {cluster}: {name} got {address}, still held by {holders}"
                elsewhere = {moment[c][name] for c in CLUSTERS if c != cluster and name in moment[c]}
                if elsewhere:
                    # Taken from the clusters that already answer it (re-added names, lagging clusters).
                    assert elsewhere == {address}
                    figures["from other clusters"] += 1
                    continue
                figures["fresh"] += 1
                position = pool.start(name)
                if pool.at(position) == address:
                    continue
                # 3. A collision: the hash start was in use, and the probe went to the first free address.
                figures["collisions"] += 1
                taken_here = {a for n, a in after.items() if n != name}
                while pool.at(position) != address:
                    assert pool.at(position) in in_use | taken_here, f"step {rev.step}: {name} skipped a free address"
                    position = (position + 1) % pool.size
                start_holders = {holder for entries in moment.values() for holder, held in entries.items()
                                 if held == pool.at(pool.start(name))}
                if start_holders and not start_holders & rev.hosts:
                    figures["collisions with an address only a stale block holds"] += 1
            moment[cluster] = after
            # 4. At every moment, all blocks together: one address per name, one name per address.
            by_name, by_address = {}, {}
            for entries in moment.values():
                for name, address in entries.items():
                    assert by_name.setdefault(name, address) == address, f"step {rev.step}: clusters disagree on {name}"
                    assert by_address.setdefault(address, name) == name, f"step {rev.step}: {address} has two names"
            # What a fresh allocation (no history) would have given: the DNS answer differs.
            figures["names a fresh allocation would move"] += sum(
                1 for name, address in after.items() if mesh.vips.addresses[name] != address)
        assert done == clusters
        figures["stale entries"] += sum(len(entries.keys() - rev.hosts) for entries in moment.values())
        last = moment
    print(dict(figures))
    # The scenario was meaningful: hashes collided, stale blocks were in the way, lagging clusters caught up.
    assert figures["collisions"] > 10
    assert figures["collisions with an address only a stale block holds"] > 0
    assert figures["from other clusters"] > 20
    assert figures["stale entries"] > 100
    assert figures["names a fresh allocation would move"] > 0
    assert figures["kept"] > 2000


def test_daemon_keep_vips_keeps_every_surviving_name_in_place(history):
    pool = Pool(CIDR)
    previous: dict[str, str] = {}
    figures = Counter()
    for rev in history.revisions:
        mesh = build_mesh(rev.objects, rev.revision, keep_vips=previous)
        fresh = build_mesh(rev.objects, rev.revision)
        vips = mesh.vips.addresses
        assert set(vips) == rev.hosts and mesh.vips.unassigned == ()
        assert len(set(vips.values())) == len(vips) and all(a in pool for a in vips.values())
        for name in vips.keys() & previous.keys():
            assert vips[name] == previous[name], f"step {rev.step}: {name} moved"
            figures["kept"] += 1
        for name in vips.keys() - previous.keys():
            assert vips[name] not in previous.values()  # not an address the last revision served
            figures["new"] += 1
        for name, address in vips.items():
            assert mesh.services[name].addresses == (address,)
        figures["names a fresh allocation would move"] += sum(1 for n in vips if fresh.vips.addresses[n] != vips[n])
        if rev.step % 25 == 0:  # what the sidecars get: listeners and routes on the kept VIPs
            assert_served(mesh)
        previous = vips
    print(dict(figures))
    assert figures["kept"] > 1500 and figures["new"] > 50
    assert figures["names a fresh allocation would move"] > 0


def assert_served(mesh) -> None:
    config = compile_view(mesh, make_view(mesh, "cluster-a"))
    tcp = [s for s in mesh.services.values() if s.ports[0].number == 5432]
    http = [s for s in mesh.services.values() if s.ports[0].number == 9080]
    if len(tcp) > 1:
        chains = {c.name: [f"{r.address_prefix}/{r.prefix_len.value}" for r in c.filter_chain_match.prefix_ranges]
                  for c in config.messages(LISTENER)["0.0.0.0_5432"].filter_chains}
        for service in tcp:
            assert chains[f"outbound|5432||{service.host}"] == [f"{mesh.vips.addresses[service.host]}/32"]
    domains = {v.name: list(v.domains) for v in config.messages(ROUTE)["9080"].virtual_hosts} if http else {}
    for service in http:
        vip = mesh.vips.addresses[service.host]
        assert domains[f"{service.host}:9080"][2:] == [vip, f"{vip}:9080"]


MIXED_CASE = ONE_CLUSTER + f"""---
apiVersion: galleon.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec: {{vipCidr: "{CIDR}"}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  hosts: [Ratings.Bookinfo.global]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.1.0.1}}]
"""


def test_a_mixed_case_host_keeps_its_address(tmp_path):
    mesh = mesh_from({"mesh.yaml": MIXED_CASE})
    target = DirTarget(tmp_path)
    seen = []
    for _ in range(3):
        [(_, outcome)] = reconcile_clusters(target, mesh.vips, mesh.settings.vip_cidr, ["cluster-a"], ["cluster-a"],
                                            create=True)
        seen.append(read_entries(target, "cluster-a"))
    assert seen[0] == seen[1] == seen[2]
    assert ipaddress.ip_address(seen[0]["ratings.bookinfo.global"]) in ipaddress.ip_network(CIDR)

"""PR previews (compiler.diff) between commits of real Git repositories made with pygit2.

Each test commits the sample repository, then a change on top, reads both commits back through
the Git source (as `galleon diff` does) and checks what the preview says about objects,
findings, every cluster's Envoy configuration and the traffic shares.
"""
from __future__ import annotations

import json

import pytest

from compiler.diff import build_preview
from compiler.revision import load
from compiler.diff.preview import Preview
from reconciler.preview import MARKER, plans, render_json, render_markdown
from reconciler.sources import LocalGitSource
from tests import gitutil
from tests.conftest import sample_files, with_pod

REVIEWS = "bookinfo/reviews.yaml"
HOST = "reviews.bookinfo.svc.cluster.local"
CLUSTERS = ("cluster-a", "cluster-b", "cluster-c")


@pytest.fixture
def repo(tmp_path):
    repository = gitutil.init(tmp_path / "mesh")
    gitutil.commit(repository, sample_files(), message="the sample mesh")
    return repository


def change(repo, edit, message="change") -> None:
    """Commit the current tree with ``edit(files)`` applied (files: path -> text)."""
    head = repo[repo.references["refs/heads/main"].target]
    files = {path: data.decode() for path, data in _tree(repo, head.tree).items()}
    edit(files)
    gitutil.commit(repo, {path: text.encode() for path, text in files.items()}, message=message)


def _tree(repo, tree, prefix="") -> dict[str, bytes]:
    files = {}
    for entry in tree:
        if entry.type_str == "tree":
            files.update(_tree(repo, repo[entry.id], f"{prefix}{entry.name}/"))
        else:
            files[prefix + entry.name] = repo[entry.id].data
    return files


def preview_of(repo, base="HEAD~1", head="HEAD", clusters=None) -> Preview:
    source = LocalGitSource(repo.workdir or repo.path)
    before = load(source.snapshot(base))
    after = load(source.snapshot(head), before)
    return build_preview(before, after, clusters, plans(before, after, clusters or list(CLUSTERS)))


def replace(path: str, old: str, new: str, count: int = 1):
    def edit(files):
        assert files[path].count(old) >= count, f"{old!r} not in {path}"
        files[path] = files[path].replace(old, new, count)
    return edit


def traffic(preview: Preview, cluster: str, service: str = f"{HOST}:9080"):
    found = [t for c in preview.clusters if c.name == cluster for t in c.traffic if t.service == service]
    assert len(found) == 1, f"{cluster}: {[t.service for c in preview.clusters for t in c.traffic]}"
    return {row.destination.text(): row for row in found[0].rows}


def resources(preview: Preview, cluster: str, proxy: str = "sidecar default"):
    views = [v for c in preview.clusters if c.name == cluster for v in c.views if v.spec.label == proxy]
    assert len(views) == 1
    return {(r.kind, r.name): r for r in views[0].changes}


def test_weight_change_shows_the_traffic_shift_from_every_cluster(repo):
    change(repo, replace(REVIEWS, "weight: 50", "weight: 20"))
    change(repo, replace(REVIEWS, "weight: 10\n", "weight: 40\n"), "second")
    preview = preview_of(repo, "HEAD~2")
    assert preview.head.valid and not preview.new_findings
    (vs,) = preview.objects.changes
    assert (vs.kind, vs.action) == ("VirtualService", "changed")
    assert [(f.text(), f.line) for f in vs.fields] == [(".spec.http[1].route[0].weight: 50 → 20", 166),
                                                        (".spec.http[1].route[2].weight: 10 → 40", 174)]
    gateway_side = {"cluster-a": "cluster-a", "cluster-b": "cluster-a", "cluster-c": "network-1 gateway"}
    for cluster in CLUSTERS:
        rows = traffic(preview, cluster)
        locality = "us-east/us-east-1a"
        v1 = rows[f"subset v1 · {gateway_side[cluster]} · {locality}"]
        assert (v1.before, v1.after) == (50.0, 20.0)
        v3 = [r for text, r in rows.items() if text.startswith("subset v3")]
        assert sum(r.before or 0 for r in v3) == 10.0 and sum(r.after or 0 for r in v3) == 40.0
        assert sum(r.after or 0 for r in rows.values()) == pytest.approx(100.0)
        route = resources(preview, cluster)[("route", "9080")]
        assert any(line.endswith(f"clusters[outbound|9080|v1|{HOST}].weight: 50 → 20") for line in route.lines)
    assert preview.biggest_shifts()[0].shift == 30.0
    # a cluster's summary counts services, not a service's tables (one per locality of its sidecars)
    import dataclasses
    from reconciler.preview import render_markdown
    first = preview.clusters[0]
    preview.clusters[0] = dataclasses.replace(first, traffic=(*first.traffic, dataclasses.replace(
        first.traffic[0], locality="eu-west/eu-west-1a")))
    assert f"<b>{first.name}: traffic</b> (1 service from 2 localities)" in render_markdown(preview)


def test_new_endpoint_in_another_network_is_gateway_weight_there_and_direct_at_home(repo):
    # a reviews v2 endpoint in cluster-c (network-2, eu-west); v2 ran only in network-1 so far
    def add_pod(files):
        files["running/cluster-c.yaml"] = with_pod(files["running/cluster-c.yaml"], "reviews", "v2", "10.3.4.9",
                                                   "cluster-c")
    change(repo, add_pod)
    preview = preview_of(repo)
    for cluster in ("cluster-a", "cluster-b"):  # network-1: the new endpoint is behind network-2's gateway
        changes = resources(preview, cluster)
        assert "~ 198.51.100.10:15443, network-2 gateway: weight 1 → 2" in \
            changes[("endpoints", f"outbound|9080||{HOST}")].lines
        assert "+ 198.51.100.10:15443 (eu-west/eu-west-1a, weight 1, network-2 gateway)" in \
            changes[("endpoints", f"outbound|9080|v2|{HOST}")].lines
    home = resources(preview, "cluster-c")
    assert "+ 10.3.4.9:9080 (eu-west/eu-west-1a, weight 1)" in home[("endpoints", f"outbound|9080|v2|{HOST}")].lines
    # cluster-c's sidecars now keep v2 traffic at home instead of crossing to network-1
    rows = traffic(preview, "cluster-c")
    home_v2 = rows["subset v2 · cluster-c · eu-west/eu-west-1a"]
    assert (home_v2.before, home_v2.after) == (None, 40.0)
    crossing = [r for text, r in rows.items() if text.startswith("subset v2 · network-1 gateway")]
    assert sum(r.before for r in crossing) == 40.0 and all(r.after is None for r in crossing)
    # ...and fail over to network-1 when their own locality is down
    assert home_v2.failover_after is None and sum(r.failover_after for r in crossing) == 40.0


def test_subset_rename_shows_clusters_replaced_and_the_dangling_route_as_a_new_finding(repo):
    change(repo, replace(REVIEWS, "    - name: v3\n", "    - name: v3-canary\n"))
    preview = preview_of(repo)
    assert not preview.head.valid and preview.base.valid
    assert [(f.code, f.kind, f.name) for f in preview.new_findings] == [("IST0101", "VirtualService", "reviews")]
    assert "'v3'" in preview.new_findings[0].message and not preview.old_findings
    for cluster in CLUSTERS:
        changes = resources(preview, cluster)
        for kind in ("cluster", "endpoints"):
            assert changes[(kind, f"outbound|9080|v3|{HOST}")].action == "removed"
            assert changes[(kind, f"outbound|9080|v3-canary|{HOST}")].action == "added"
        dangling = traffic(preview, cluster)["subset v3 · no such cluster (503)"]
        assert (dangling.before, dangling.after) == (None, 10.0)
    markdown = render_markdown(preview)
    assert markdown.index("**HEAD is invalid** (1 error)") < markdown.index("**Objects:**")


def test_objects_of_a_file_broken_at_head_are_unreadable_not_removed(repo):
    """A file HEAD cannot read loses its objects from HEAD: they are not removed by the change, and the
    preview says so beside the file's GAL0001."""
    change(repo, replace(REVIEWS, "  hosts:\n    - reviews.bookinfo.svc.cluster.local\n",
                         "  hosts: [reviews.bookinfo.svc.cluster.local\n"))
    preview = preview_of(repo)
    assert any(f.code == "GAL0001" and f.file == REVIEWS for f in preview.new_findings)
    actions = {(c.kind, c.name): c.action for c in preview.objects.changes}
    assert actions[("VirtualService", "reviews")] == "unreadable"
    assert "removed" not in actions.values()
    markdown = render_markdown(preview)
    assert "unreadable at HEAD** (invalid YAML)" in markdown
    assert "- **unreadable at HEAD** `VirtualService bookinfo/reviews`" in markdown
    assert json.loads(render_json(preview))["objects"]["counts"]["unreadable"] == preview.objects.count("unreadable")
    # a document refused on its own (an alias cycle) leaves the file's others read: one removed is removed
    change(repo, replace(REVIEWS, "  hosts: [reviews.bookinfo.svc.cluster.local\n",
                         "  hosts:\n    - reviews.bookinfo.svc.cluster.local\n"))
    change(repo, lambda files: files.update({REVIEWS: files[REVIEWS].split("---\n# Requests from user")[0]
                                             + "---\nloop: &a [*a]\n"}))
    preview = preview_of(repo)
    assert [f.message for f in preview.head.findings if f.code == "GAL0001" and f.file == REVIEWS]
    assert {(c.kind, c.name): c.action for c in preview.objects.changes}[("VirtualService", "reviews")] == "removed"


def test_shares_to_no_endpoint_say_the_repository_has_none_and_where_live_ones_come_from(repo):
    """A subset whose pods the repository does not hold gets `no endpoints (503)`: true of what the
    repository says, not necessarily of the cluster, and the preview says so."""
    change(repo, replace(REVIEWS, "      labels:\n        version: v3\n", "      labels:\n        version: v9\n"))
    preview = preview_of(repo)
    assert traffic(preview, "cluster-a")["subset v3 · no endpoints (503)"].after == 10.0
    assert preview.without_endpoints() == [f"{HOST}:9080"]
    markdown = render_markdown(preview)
    assert f"1 service (`{HOST}:9080`) has no endpoints in the repository" in markdown
    assert "`galleon diff --server`" in markdown


def test_a_repository_without_a_cluster_is_told_why_no_envoy_change_is_shown(tmp_path, repo):
    """A plain Istio repository (no Galleon Cluster): its objects are compared, and the preview says why
    no proxy's configuration is, and what to add; compiling for a cluster says the same."""
    from compiler.view import ViewError, make_view
    service = ("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
               "spec: {selector: {app: web}, ports: [{name: http, port: 80}]}\n")
    plain = gitutil.init(tmp_path / "plain")
    gitutil.commit(plain, {"web.yaml": service.encode()})
    gitutil.commit(plain, {"web.yaml": service.replace("port: 80", "port: 8080").encode()})
    preview = preview_of(plain, clusters=[])
    assert preview.envoy_compared and preview.clusters == [] and preview.objects.count("changed") == 1
    assert "The repository defines no Cluster" in render_markdown(preview)
    change(repo, replace(REVIEWS, "    - name: v3\n", "    - name: v3-canary\n"))
    assert "defines no Cluster" not in render_markdown(preview_of(repo))
    with pytest.raises(ViewError, match="the repository defines none; add one per Kubernetes cluster"):
        make_view(preview.head.mesh, "cluster-a")


def test_whitespace_reordered_keys_and_moves_change_nothing(repo):
    def reformat(files):
        # blank lines and a comment shift every line; keys reordered; one object moved to a new file
        text = "# reformatted\n\n" + files[REVIEWS].replace("  name: reviews\n  namespace: bookinfo\n",
                                                          "  namespace: bookinfo\n  name: reviews\n", 1)
        first, rest = text.split("\n---\n", 1)
        files[REVIEWS] = rest
        files["bookinfo/reviews-entry.yaml"] = first + "\n"
    change(repo, reformat)
    preview = preview_of(repo)
    assert [(c.kind, c.action, c.moved_from) for c in preview.objects.changes] == \
        [("Service", "moved", "bookinfo/reviews.yaml:2")]
    assert all(not v.changes for c in preview.clusters for v in c.views)
    assert not any(c.traffic for c in preview.clusters)
    assert not preview.has_changes
    assert "**No changes**: the two revisions mean the same configuration (files moved or reformatted only)" \
        in render_markdown(preview)


def test_identical_revisions_have_no_changes(repo):
    change(repo, lambda files: files.update({REVIEWS: files[REVIEWS] + "\n# trailing comment\n"}))
    preview = preview_of(repo)
    assert not preview.has_changes
    assert "**No changes**" in render_markdown(preview)


def test_cluster_filter_and_determinism(repo):
    change(repo, replace(REVIEWS, "weight: 50", "weight: 45"))
    one = preview_of(repo, clusters=["cluster-b"])
    assert [c.name for c in one.clusters] == ["cluster-b"]
    again = preview_of(repo, clusters=["cluster-b"])
    assert render_json(one) == render_json(again)
    assert render_markdown(one) == render_markdown(again)
    data = json.loads(render_json(one))
    assert data["clusters"][0]["traffic"][0]["service"] == f"{HOST}:9080"


def test_truncation_keeps_the_summary_whole_and_names_what_was_cut(repo):
    def many(files):
        files[REVIEWS] = files[REVIEWS].replace("simple: LEAST_REQUEST", "simple: ROUND_ROBIN")
        files[REVIEWS] = files[REVIEWS].replace("weight: 50", "weight: 30").replace("weight: 10\n", "weight: 30\n")
        for path in [p for p in files if p.startswith(("bookinfo/", "running/"))]:
            files[path] = files[path].replace("serviceAccount: bookinfo-", "serviceAccount: bookinfo-v2-").replace(
                "serviceAccountName: bookinfo-", "serviceAccountName: bookinfo-v2-")
    change(repo, many)
    preview = preview_of(repo)
    full = render_markdown(preview)
    limit = 6_000
    assert len(full.encode()) > 2 * limit
    cut = render_markdown(preview, max_bytes=limit)
    assert len(cut.encode()) <= limit
    summary = full[:full.index("<details")]
    assert cut.startswith(summary) and cut.startswith(MARKER)
    assert "Cut to fit the comment size limit" in cut
    note = cut[cut.index("Cut to fit"):]
    assert "cluster-c" in note  # blocks are kept in order, so the last cluster's go first


# details' VirtualService also mirrors its requests to reviews v3
add_mirror = replace("bookinfo/details.yaml", "    - name: details-canary\n",
                     "    - name: details-canary\n      mirror:\n        host: reviews.bookinfo.svc.cluster.local\n"
                     "        subset: v3\n")


# (what BASE adds to the sample, what HEAD changes then)
EDITS = {
    "route weights": (None, replace(REVIEWS, "weight: 50", "weight: 20")),
    "an endpoint": (None, replace("running/cluster-c.yaml", "[10.3.4.1]", "[10.3.4.7]")),
    "a subset renamed (HEAD invalid)": (None, replace(REVIEWS, "    - name: v3\n", "    - name: v3-canary\n")),
    "a WorkloadEntry moved": (None, replace("bookinfo/mysqldb.yaml", "address: 10.3.5.1", "address: 10.3.5.2")),
    "a VirtualService that mirrors to another host": (None, add_mirror),
    # details' virtual host names the port of the reviews cluster it mirrors to: it changes too
    "the port of a host another host's VirtualService mirrors to": (add_mirror, replace(
        REVIEWS, "    - port: 9080\n", "    - port: 9081\n")),
    "a mesh-wide object": (None, replace("mesh/networks.yaml", "address: 198.51.100.10", "address: 198.51.100.11")),
}


@pytest.mark.parametrize("setup, edit", EDITS.values(), ids=EDITS.keys())
def test_compiling_only_the_affected_hosts_gives_the_same_preview(repo, setup, edit):
    if setup:
        change(repo, setup, "setup")
    change(repo, edit)
    source = LocalGitSource(repo.workdir or repo.path)
    base = load(source.snapshot("HEAD~1"))
    head = load(source.snapshot("HEAD"), base)
    narrow, whole = build_preview(base, head), build_preview(base, head, narrow=False)
    assert render_json(narrow) == render_json(whole)
    assert any(v.changes for c in whole.clusters for v in c.views)


def test_a_ca_policy_change_is_a_reissue_per_cluster_and_no_envoy_change(repo):
    change(repo, replace("mesh/ca.yaml", "lifetime: 8760h", "lifetime: 17520h"))
    preview = preview_of(repo)
    assert all(not v.changes for c in preview.clusters for v in c.views)
    section, dns_section = preview.plans
    assert [(c.cluster, c.action, c.detail) for c in section.changes] == [
        (cluster, "reissue", "policy changed: lifetime 8760h → 17520h") for cluster in CLUSTERS]
    assert dns_section.changes == ()
    assert "CA: istio-system/cacerts intermediates:** 3 changes" in render_markdown(preview)


def test_a_new_global_name_shows_its_vip_for_every_cluster_and_old_names_keep_theirs(repo):
    def add_details(files):
        files["global/details-global.yaml"] = files["global/ratings-global.yaml"].replace(
            "ratings", "details").replace("10.1.3.1", "10.1.3.9").replace("10.3.3.1", "10.3.3.9")
    change(repo, add_details)
    preview = preview_of(repo)
    dns_section = preview.plans[1]
    (row,) = dns_section.changes
    vips = load(LocalGitSource(repo.workdir).snapshot("HEAD")).mesh.vips.addresses
    assert (row.cluster, row.action, row.subject) == (
        ", ".join(CLUSTERS), "add", f"details.bookinfo.global → {vips['details.bookinfo.global']}")
    assert vips["details.bookinfo.global"].startswith("240.0.")
    markdown = render_markdown(preview)
    assert "DNS: .global names and VIPs in CoreDNS:** 1 change" in markdown
    assert f"details.bookinfo.global → {vips['details.bookinfo.global']}" in markdown
    # The new name's sidecar routes answer its VIP as a Host.
    assert any(vips["details.bookinfo.global"] in line for v in preview.clusters[0].views for ch in v.changes
               for line in json.dumps(ch.to_dict()).split(","))


def test_removing_a_global_name_and_giving_another_its_own_address(repo):
    base_vips = load(LocalGitSource(repo.workdir).snapshot("HEAD")).mesh.vips.addresses
    change(repo, replace("global/ratings-global.yaml", "  location: MESH_INTERNAL",
                         "  addresses: [240.0.7.7]\n  location: MESH_INTERNAL"))
    (row,) = preview_of(repo).plans[1].changes
    assert (row.action, row.subject, row.detail) == (
        "readdress", f"ratings.bookinfo.global: {base_vips['ratings.bookinfo.global']} → 240.0.7.7",
        "its ServiceEntry's own address")
    change(repo, lambda files: files.pop("global/ratings-global.yaml"))
    rows = [(r.action, r.subject) for r in preview_of(repo).plans[1].changes]
    assert rows == [("remove", "ratings.bookinfo.global (240.0.7.7)")]

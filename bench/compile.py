"""Benchmark: compile a large mesh to Envoy xDS (a benchmark that prints figures, not a test).

Generates the synthetic federation of bench/validate.py (its generator, at the
sizes given here) plus, unless --no-gateway, a small ingress Gateway, checks
that it validates with zero errors, builds the typed mesh once, then times
compiler.xds.compile_view: one sidecar view, every view (a sidecar per cluster
and the ingress router), and the recompile of one view after one ServiceEntry
endpoint changes. It also prints the output's size, the memory used and the
"floor" (parsing the same YAML plus serializing one view's output once). With
--kubernetes each service is a Kubernetes Service, an EndpointSlice per cluster
and its Pods instead of a ServiceEntry; the script first checks that every view
then compiles to what the ServiceEntry mesh's does, but for provenance.

    .venv/bin/python bench/compile.py                  # 5,000 services x 3 clusters x 10 endpoints
    .venv/bin/python bench/compile.py --services 500   # smaller
    .venv/bin/python bench/compile.py --kubernetes     # the same mesh as Services, EndpointSlices, Pods
    .venv/bin/python bench/compile.py --profile        # cProfile of one full view compile

See bench/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import os
import pstats
import re
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts bench/ first on sys.path, and bench/validate.py would then shadow
# protoc-gen-validate's top-level `validate` package that the Envoy protos import. Import the
# other benchmark as `bench.validate` (a namespace package) from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from google.protobuf import descriptor_pool, message_factory  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor  # noqa: E402
from google.protobuf.internal import api_implementation  # noqa: E402

from bench.validate import (ISTIO, NAMESPACES, build_snapshot, in_child, objects_per_service,  # noqa: E402
                            peak_rss_mb)
from compiler import provenance, xds  # noqa: E402
from compiler.findings import Level, sorted_findings  # noqa: E402
from compiler.model import build_mesh  # noqa: E402
from compiler.parse import parse  # noqa: E402
from compiler.snapshot import Snapshot  # noqa: E402
from compiler.revision import load  # noqa: E402
from compiler.view import make_view  # noqa: E402
from compiler.cache import serialize  # noqa: E402
from compiler.xds import compile_view  # noqa: E402
from compiler.xds_types import TYPES

PUSH_ORDER = tuple(t.url for t in TYPES)  # the type URLs, in push order

FILES = 100  # as bench/validate.py's default
TARGET = (5000, 3, 10)  # services, clusters, endpoints per service per cluster
TARGET_VIEW_SECONDS = 2.0
TARGET_RECOMPILE_SECONDS = 0.100
TARGET_FLOOR_RATIO = 3.0
TARGET_SERVED_RATIO = 2.0  # a served view's memory against its serialized size
GATEWAY_FILE = "mesh/zz-ingress-gateway.yaml"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
CHANGED_ADDRESS = "10.255.255.254"  # outside the generator's 10.0.0.1.. range, which it caps below 2**24 - 2
SHORT = {t: t.rsplit(".", 1)[-1] for t in PUSH_ORDER}


# --------------------------------------------------------------------------- the mesh

def gateway_objects(services: int) -> list[dict]:
    """An ingress Gateway on port 80, its workload, and a VirtualService binding one route per namespace."""
    routes = [{"name": f"ns-{s % NAMESPACES:02d}",
               "match": [{"uri": {"prefix": f"/ns-{s % NAMESPACES:02d}/"}}],
               "route": [{"destination": {"host": f"svc-{s:05d}.ns-{s % NAMESPACES:02d}.svc.cluster.local"}}]}
              for s in range(min(services, NAMESPACES))]
    return [
        {"apiVersion": ISTIO, "kind": "Gateway",
         "metadata": {"name": "ingress", "namespace": "istio-system"},
         "spec": {"selector": dict(GATEWAY_SELECTOR),
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                               "hosts": ["istio-system/www.example.com"]}]}},
        {"apiVersion": ISTIO, "kind": "WorkloadEntry",
         "metadata": {"name": "istio-ingressgateway-cluster-0", "namespace": "istio-system"},
         "spec": {"address": "192.0.2.100", "serviceAccount": "istio-ingressgateway-service-account",
                  "labels": {**GATEWAY_SELECTOR, "app": "istio-ingressgateway",
                             "topology.istio.io/cluster": "cluster-0"}}},
        {"apiVersion": ISTIO, "kind": "VirtualService",
         "metadata": {"name": "ingress", "namespace": "istio-system"},
         "spec": {"hosts": ["www.example.com"], "gateways": ["istio-system/ingress"], "http": routes}},
    ]


def make_snapshot(services: int, clusters: int, endpoints: int, gateway: bool,
                  kubernetes: bool = False) -> tuple[Snapshot, int]:
    snapshot, count = build_snapshot(services, clusters, endpoints, FILES, kubernetes)
    if not gateway:
        return snapshot, count
    extra = gateway_objects(services)
    text = "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in extra)
    return Snapshot(snapshot.revision, {**snapshot.files, GATEWAY_FILE: text.encode()}, snapshot.origin), \
        count + len(extra)


def with_one_endpoint_moved(snapshot: Snapshot, objects) -> tuple[Snapshot, str]:
    """The same snapshot, but the first endpoint of the first ServiceEntry (in a Kubernetes mesh, of
    the first EndpointSlice: the same endpoint) has a new address."""
    entries = [o for o in objects if o.kind == "ServiceEntry"]
    if entries:
        obj = min(entries, key=lambda o: (o.namespace, o.name))
        old, path = obj.spec["endpoints"][0]["address"], ("spec", "endpoints", 0, "address")
    else:
        obj = min((o for o in objects if o.kind == "EndpointSlice"), key=lambda o: (o.namespace, o.name))
        old, path = obj.body["endpoints"][0]["addresses"][0], ("endpoints", 0, "addresses", 0)
    line = obj.line_of(path)
    lines = snapshot.files[obj.file].decode().split("\n")
    # `address: 10.0.0.1` (a ServiceEntry's) or `- 10.0.0.1` (an EndpointSlice's addresses)
    edited, n = re.subn(rf"((?:address:|-)\s*['\"]?){re.escape(old)}(['\"]?\s*)$", rf"\g<1>{CHANGED_ADDRESS}\g<2>",
                        lines[line - 1])
    if n != 1:
        raise SystemExit(f"cannot find address {old} on {obj.file}:{line}: {lines[line - 1]!r}")
    lines[line - 1] = edited
    files = dict(snapshot.files)
    files[obj.file] = "\n".join(lines).encode()
    return (Snapshot(snapshot.revision + "+1", files, snapshot.origin),
            f"{obj.kind} {obj.namespace}/{obj.name}: endpoint {old} -> {CHANGED_ADDRESS} ({obj.file}:{line})")


def views_of(mesh) -> list[tuple[str, object]]:
    """(label, view): a sidecar per cluster, then one ingress router if the mesh has a Gateway."""
    views = [(f"sidecar {name}", make_view(mesh, name, "sidecar~10.0.0.1~bench.ns-00~ns-00.svc.cluster.local"))
             for name in sorted(mesh.clusters)]
    if mesh.gateways:
        gw = mesh.gateways[0]
        selector = gw.spec.get("selector") or {}
        cluster = sorted(mesh.clusters)[0]
        node = "router~10.0.0.2~istio-ingressgateway-bench.istio-system~istio-system.svc.cluster.local"
        views.append((f"router {cluster} ({gw.namespace}/{gw.name})", make_view(mesh, cluster, node, selector)))
    return views


# --------------------------------------------------------------------------- the Kubernetes mesh's output

_METADATA = "envoy.config.core.v3.Metadata"
_ANY = "google.protobuf.Any"


def _strip_provenance(message) -> bool:
    """Remove Galleon's provenance (``filter_metadata["galleon"]``) from ``message`` and every message
    in it, Any payloads included; whether anything was removed."""
    name = message.DESCRIPTOR.full_name
    if name == _METADATA:
        if provenance.FILTER in message.filter_metadata:
            del message.filter_metadata[provenance.FILTER]
            return True
        return False
    if name == _ANY:
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(message.type_url.rpartition("/")[2])
        except KeyError:
            return False
        inner = message_factory.GetMessageClass(descriptor)()
        message.Unpack(inner)
        if not _strip_provenance(inner):
            return False
        message.Pack(inner, deterministic=True)
        return True
    removed = False
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    removed |= _strip_provenance(item)
        elif field.is_repeated:
            for item in value:
                removed |= _strip_provenance(item)
        else:
            removed |= _strip_provenance(value)
    return removed


def without_provenance(message) -> bytes:
    """The message's deterministic serialization once its provenance is removed (a copy is changed)."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip_provenance(copy)
    return copy.SerializeToString(deterministic=True)


def compare_with_service_entries(kube_objects, revision: str, services: int, clusters: int, endpoints: int,
                                 gateway: bool) -> str:
    """One line: whether each view of the Kubernetes mesh (``kube_objects``, validated) compiles to
    what the same view of the ServiceEntry mesh of the same size compiles to, provenance apart: the
    same resources by type and name, and the same bytes once provenance is removed from both."""
    se_snapshot, _ = make_snapshot(services, clusters, endpoints, gateway, kubernetes=False)
    se_validation = load(se_snapshot)
    if not se_validation.valid:
        return "check failed: the ServiceEntry mesh of the same size does not validate"
    kube_mesh = build_mesh(kube_objects, revision)
    se_mesh = build_mesh(se_validation.objects, se_snapshot.revision)
    kube_views, se_views = views_of(kube_mesh), views_of(se_mesh)
    if [label for label, _ in kube_views] != [label for label, _ in se_views]:
        return (f"compiled output NOT the ServiceEntry mesh's: views {[label for label, _ in kube_views]} "
                f"against {[label for label, _ in se_views]}")
    resources = provenance_only = 0
    differences: list[str] = []
    for (label, kube_view), (_, se_view) in zip(kube_views, se_views):
        ours, theirs = compile_view(kube_mesh, kube_view), compile_view(se_mesh, se_view)
        for type_url in PUSH_ORDER:
            a, b = ours.messages(type_url), theirs.messages(type_url)
            for name in sorted(a.keys() | b.keys()):
                resources += 1
                if name not in a or name not in b:
                    differences.append(f"{label}: {SHORT[type_url]} {name} only in the "
                                       f"{'Kubernetes' if name in a else 'ServiceEntry'} mesh")
                elif serialize(a[name]) != serialize(b[name]):
                    if without_provenance(a[name]) == without_provenance(b[name]):
                        provenance_only += 1
                    else:
                        differences.append(f"{label}: {SHORT[type_url]} {name} differs")
    if differences:
        return (f"compiled output NOT the ServiceEntry mesh's: {len(differences):,} of {resources:,} resources "
                f"of {len(kube_views)} views differ beyond provenance ({'; '.join(differences[:4])}"
                f"{' ...' if len(differences) > 4 else ''})")
    return (f"compiled output the same as the ServiceEntry mesh's but for provenance: {resources:,} resources of "
            f"{len(kube_views)} views ({', '.join(label for label, _ in kube_views)}), {provenance_only:,} of them "
            f"with other provenance, all others byte for byte")


# --------------------------------------------------------------------------- measuring

def rss_mb() -> float | None:
    """The process's current resident set (Linux /proc), or None where that is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return None


def best_of(repeat: int, fn, setup=lambda: None):
    """(best seconds of ``fn(setup())``, the result of the last call); ``setup`` is not timed."""
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        arg = setup()
        gc.collect()
        t0 = time.perf_counter()
        result = fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best, result


def incremental_api():
    """(how to recompile given the previous result, a description), or (None, why not)."""
    params = [p for p in inspect.signature(compile_view).parameters
              if p in ("previous", "prev", "last", "cache", "base", "old")]
    if params:
        name = params[0]
        return (lambda mesh, view, old: compile_view(mesh, view, **{name: old}),
                f"incremental: compile_view(..., {name}=previous CompiledView)")
    classes = [n for n, v in vars(xds).items() if isinstance(v, type) and "compiler" in n.lower()]
    if classes:
        return None, (f"compiler.xds.{classes[0]} exists but this benchmark does not know its API yet: "
                      "timing the plain full compile_view")
    return None, "no incremental compile yet: plain full compile_view"


def output_size(config) -> tuple[dict[str, int], dict[str, int]]:
    counts, sizes = {}, {}
    for type_url in PUSH_ORDER:
        counts[type_url] = len(config.resources[type_url])
        sizes[type_url] = sum(resource.size for resource in config.resources[type_url].values())
    return counts, sizes


def changed(old, new) -> list[str]:
    out = []
    for type_url in PUSH_ORDER:
        a, b = old.resources[type_url], new.resources[type_url]
        for name in sorted(a.keys() | b.keys()):
            if name not in a or name not in b or a[name].version != b[name].version:
                out.append(f"{SHORT[type_url]} {name}")
    return out


def served_memory(mesh, view) -> tuple[int, int]:
    """(bytes the daemon holds for one more served view of this mesh, that view's serialized size):
    its compiled resources, what the next compile takes back, and the responses a proxy subscribing
    to every resource gets, as tracemalloc counts them once collected. What the mesh keeps for every
    view (cache.py's per-mesh entries) is filled by a first serve, before counting."""
    from reconciler.ads.views import serve_view
    serve_view(mesh, view)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    served = serve_view(mesh, view)
    for xds_type in TYPES:
        served.sotw(xds_type.url, None if xds_type.wildcard else frozenset(served.resources[xds_type.url]))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, served.size()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=5000, help="services; default 5000")
    ap.add_argument("--clusters", type=int, default=3, help="clusters, alternating over 2 networks; default 3")
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints per service per cluster; default 10")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported; default 3")
    ap.add_argument("--no-gateway", action="store_true",
                    help="leave out the ingress Gateway (the mesh is then exactly bench/validate.py's)")
    ap.add_argument("--kubernetes", action="store_true",
                    help="each service as a Kubernetes Service, an EndpointSlice per cluster and its Pods "
                         "instead of a ServiceEntry")
    ap.add_argument("--no-check", action="store_true",
                    help="with --kubernetes, skip comparing the compiled views with the ServiceEntry mesh's")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing, run cProfile over one full view compile and print the hot spots")
    args = ap.parse_args(argv)
    if min(args.services, args.clusters, args.endpoints, args.repeat) < 1:
        ap.error("every size must be at least 1")

    rss = {"start": rss_mb()}
    t0 = time.perf_counter()
    snapshot, count = make_snapshot(args.services, args.clusters, args.endpoints, not args.no_gateway,
                                    args.kubernetes)
    size = sum(len(b) for b in snapshot.files.values())
    generated = time.perf_counter() - t0
    rss["snapshot"] = rss_mb()
    per_service = objects_per_service(args.clusters, args.endpoints, args.kubernetes)
    shape = ("Service, DestinationRule, VirtualService, EndpointSlice per cluster, Pod per endpoint"
             if args.kubernetes else "ServiceEntry, DestinationRule, VirtualService")
    print(f"generated {count:,} objects ({args.services:,} services x {per_service} ({shape}) + "
          f"{count - per_service * args.services} mesh{'' if args.no_gateway else ' and gateway'}), "
          f"{args.clusters} clusters, {args.services * args.clusters * args.endpoints:,} endpoints, "
          f"{len(snapshot.files)} files, "
          f"{size:,} bytes in {generated:.2f} s; protobuf backend {api_implementation.Type()}")

    t0 = time.perf_counter()
    validation = load(snapshot)
    validated = time.perf_counter() - t0
    errors = [f for f in validation.findings if f.level is Level.ERROR]
    if errors or len(validation.objects) != count:
        print(f"FAIL: the generated mesh is not valid: {len(errors)} errors, {len(validation.findings)} findings, "
              f"{len(validation.objects)}/{count} objects passed their schema", file=sys.stderr)
        for finding in sorted_findings(validation.findings)[:5]:
            print("  " + finding.text(), file=sys.stderr)
        return 1
    rss["validated"] = rss_mb()
    t0 = time.perf_counter()
    mesh = build_mesh(validation.objects, snapshot.revision)
    built = time.perf_counter() - t0
    rss["mesh"] = rss_mb()
    views = views_of(mesh)
    label, view = views[0]
    print(f"valid: 0 errors, {len(validation.findings)} warnings (parse + validate {validated:.2f} s, cold); "
          f"build_mesh {built:.2f} s: {len(mesh.services):,} services, {len(mesh.clusters)} clusters, "
          f"{len(mesh.gateways)} gateways")
    print(f"views: {', '.join(name for name, _ in views)}")
    if args.kubernetes and not args.no_check:
        t0 = time.perf_counter()
        answer = in_child(lambda: compare_with_service_entries(validation.objects, snapshot.revision, args.services,
                                                               args.clusters, args.endpoints, not args.no_gateway))
        print(f"{answer} [checked in {time.perf_counter() - t0:.1f} s, in a child process]")

    # A Mesh may memoize what every view shares (mesh.memo), so a compile on a mesh that has
    # already compiled a view is cheaper than the first compile after a new snapshot. Every timed
    # compile below therefore gets a freshly built mesh (build_mesh is not timed), except the
    # "same mesh again" line, which shows what those caches save.
    fresh = lambda objects=validation.objects: build_mesh(objects, snapshot.revision)  # noqa: E731

    # The first compile in the process is cold (first use of every message class, descriptor pools, ...).
    t0 = time.perf_counter()
    compile_view(mesh, view)
    cold = time.perf_counter() - t0
    print(f"cold first compile of one view ({label}): {cold:.3f} s")

    if args.profile:
        mesh = fresh()
        gc.collect()
        profiler = cProfile.Profile()
        profiler.enable()
        compile_view(mesh, view)
        profiler.disable()
        print(f"\n=== top 25 by cumulative time (one compile_view, {label}, fresh mesh, under cProfile) ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.strip_dirs().sort_stats("cumulative").print_stats(25)
        print("=== top 25 by own time ===")
        stats.sort_stats("tottime").print_stats(25)
        return 0

    # 1. one view, all views
    t_view, config = best_of(args.repeat, lambda m: compile_view(m, view), fresh)
    t_warm, _ = best_of(args.repeat, lambda _: compile_view(mesh, view))
    per_view = {name: float("inf") for name, _ in views}
    t_all, configs = float("inf"), None
    for _ in range(args.repeat):
        configs = None
        all_mesh = fresh()
        gc.collect()
        total = 0.0
        configs = []
        for name, v in views:
            t0 = time.perf_counter()
            configs.append(compile_view(all_mesh, v))
            seconds = time.perf_counter() - t0
            per_view[name] = min(per_view[name], seconds)
            total += seconds
        t_all = min(t_all, total)
    del all_mesh
    rss["compiled"] = rss_mb()

    # 2. one ServiceEntry changes: re-parse/validate/build_mesh untimed; time only the view's compile
    moved, what = with_one_endpoint_moved(snapshot, validation.objects)
    t0 = time.perf_counter()
    validation2 = load(moved)
    if not validation2.valid:
        print("FAIL: the changed snapshot is not valid", file=sys.stderr)
        for finding in sorted_findings(validation2.findings)[:5]:
            print("  " + finding.text(), file=sys.stderr)
        return 1
    fresh2 = lambda: build_mesh(validation2.objects, snapshot.revision)  # noqa: E731  (same revision)
    fresh2()
    rebuilt = time.perf_counter() - t0
    incremental, how = incremental_api()
    if incremental:
        t_re, config2 = best_of(args.repeat, lambda m: incremental(m, view, config), fresh2)
    else:
        t_re, config2 = best_of(args.repeat, lambda m: compile_view(m, view), fresh2)
    diff = changed(config, config2)

    # 3. output size of one view, and what the daemon holds to serve it
    counts, sizes = output_size(config)
    total_bytes = sum(sizes.values())
    messages = [m for type_url in PUSH_ORDER for m in config.messages(type_url).values()]
    held, serialized = served_memory(fresh(), view)

    # 5. the floor: parse the same YAML once, serialize one view's output once
    t_parse, _ = best_of(args.repeat, lambda _: parse(snapshot))
    t_ser, _ = best_of(args.repeat, lambda _: [serialize(m) for m in messages])
    floor = t_parse + t_ser
    peak = peak_rss_mb()

    print()
    print(f"compile one view   {t_view:.3f} s   ({label}; best of {args.repeat}, each on a freshly built mesh)")
    print(f"  same mesh again    {t_warm:.3f} s   (the mesh's own caches already filled by an earlier compile)")
    print(f"compile all views  {t_all:.3f} s   ({len(views)} views, one after another on a fresh mesh; "
          f"best of {args.repeat}; each view's own best below)")
    for name, seconds in per_view.items():
        print(f"  {name:<40} {seconds:.3f} s")
    print(f"recompile one view {t_re:.3f} s   after one change ({how})")
    print(f"  change: {what}; re-parse + validate + build_mesh {rebuilt:.2f} s, not counted")
    print(f"  resources that differ: {len(diff)}" + (f" ({'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''})"
                                                     if diff else " -- the change did not reach the output!"))
    print(f"output of one view ({label}):")
    for type_url in PUSH_ORDER:
        print(f"  {SHORT[type_url]:<24} {counts[type_url]:>7,} resources {sizes[type_url]:>13,} bytes")
    print(f"  {'total':<24} {sum(counts.values()):>7,} resources {total_bytes:>13,} bytes serialized")
    if rss["start"] is not None:
        print(f"RSS                {rss['start']:,.0f} MB at start -> {rss['snapshot']:,.0f} after generating "
              f"-> {rss['validated']:,.0f} after validating -> {rss['mesh']:,.0f} after build_mesh -> "
              f"{rss['compiled']:,.0f} holding {len(configs) + 1} views' output: "
              f"+{rss['compiled'] - rss['start']:,.0f} MB (+{rss['compiled'] - rss['mesh']:,.0f} MB compiling)")
    print(f"served view        {held / 2**20:,.1f} MB held for {serialized / 2**20:,.1f} MB serialized: "
          f"{held / serialized:.2f}x   (one more served view of {label}: resources, units, responses)")
    print(f"peak RSS           {peak:,.0f} MB   (whole process, ru_maxrss)")
    print(f"floor              {floor:.3f} s   (parse the YAML {t_parse:.3f} s + serialize one view's "
          f"{len(messages):,} messages {t_ser:.3f} s)")
    ratio = t_view / floor
    print(f"compile / floor    {ratio:.1f}x")

    # 6. targets (informational)
    size_note = "" if (args.services, args.clusters, args.endpoints) == TARGET else \
        f" [measured at {args.services:,} x {args.clusters} x {args.endpoints}, not the target size]"
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print()
    print(f"target: {TARGET[0]:,} services x {TARGET[1]} clusters x {TARGET[2]} endpoints: one view < "
          f"{TARGET_VIEW_SECONDS:g} s: {verdict(t_view < TARGET_VIEW_SECONDS)} ({t_view:.2f} s){size_note}")
    print(f"target: one-object recompile < {TARGET_RECOMPILE_SECONDS * 1000:g} ms: "
          f"{verdict(t_re < TARGET_RECOMPILE_SECONDS)} ({t_re * 1000:,.0f} ms){size_note}")
    print(f"target: full compile within {TARGET_FLOOR_RATIO:g}x of the floor: "
          f"{verdict(ratio <= TARGET_FLOOR_RATIO)} ({ratio:.1f}x){size_note}")
    print(f"target: a served view holds at most {TARGET_SERVED_RATIO:g}x its serialized size: "
          f"{verdict(held <= TARGET_SERVED_RATIO * serialized)} ({held / serialized:.2f}x){size_note}")
    return 0


if __name__ == "__main__":
    from reconciler import runtime
    runtime.for_command()  # the runtime policy of the galleon command this measures
    sys.exit(main())

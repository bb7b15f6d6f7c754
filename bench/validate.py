"""Benchmark: parse + validate a large synthetic mesh (a benchmark that prints figures, not a test).

Generates, in memory, a valid federation -- Clusters on two networks, one
MeshNetworks with east-west gateways, a MeshConfig, and per service a STATIC
ServiceEntry with endpoints in every cluster, a DestinationRule (subsets v1/v2,
outlierDetection) and a VirtualService (weighted 90/10 route) -- spreads it
over --files YAML files of one Snapshot, checks that it validates with zero
errors, then times compiler.parse.parse and compiler.validate.validate_objects.
With --kubernetes each service is a Kubernetes Service instead of a ServiceEntry,
its endpoints one EndpointSlice per cluster naming Pods.

    .venv/bin/python bench/validate.py                 # ~9,000 objects, best of 3
    .venv/bin/python bench/validate.py --services 300  # smaller
    .venv/bin/python bench/validate.py --kubernetes    # the same mesh as Services, EndpointSlices, Pods
    .venv/bin/python bench/validate.py --profile       # cProfile of one parse + validate

See bench/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import ipaddress
import os
import pstats
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from compiler.findings import Level, sorted_findings  # noqa: E402
from compiler.parse import parse  # noqa: E402
from compiler.snapshot import Snapshot  # noqa: E402
from compiler.validate import validate_objects  # noqa: E402

TARGET_OBJECTS = 10_000
TARGET_SECONDS = 3.0
NAMESPACES = 10
REGIONS = ("us-east", "eu-west")
ISTIO = "networking.istio.io/v1"
GALLEON = "galleon.io/v1alpha1"
CLUSTER_LABEL = "topology.istio.io/cluster"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TLS_MODE_LABEL = "security.istio.io/tlsMode"

try:
    _Dumper = yaml.CSafeDumper
except AttributeError:  # PyYAML without libyaml
    _Dumper = yaml.SafeDumper


# --------------------------------------------------------------------------- the synthetic mesh

def _network(c: int) -> str:
    return f"network-{c % 2 + 1}"


def mesh_objects(clusters: int) -> list[dict]:
    """The federation: Clusters alternating between two networks, MeshNetworks, MeshConfig."""
    objs: list[dict] = []
    for c in range(clusters):
        region = REGIONS[c % 2]
        objs.append({
            "apiVersion": GALLEON, "kind": "Cluster",
            "metadata": {"name": f"cluster-{c}", "namespace": "istio-system"},
            "spec": {"network": _network(c), "locality": f"{region}/{region}-{c // 2 + 1}a",
                     "kubeContext": f"kind-cluster-{c}"},
        })
    networks: dict[str, dict] = {}
    for c in range(clusters):
        net = networks.setdefault(_network(c), {"endpoints": [], "gateways": []})
        net["endpoints"].append({"fromRegistry": f"cluster-{c}"})
    for i, name in enumerate(sorted(networks)):
        networks[name]["gateways"].append({"address": f"192.0.2.{10 + i}", "port": 15443})
    objs.append({
        "apiVersion": GALLEON, "kind": "MeshNetworks",
        "metadata": {"name": "mesh-networks", "namespace": "istio-system"},
        "spec": {"networks": networks},
    })
    objs.append({
        "apiVersion": GALLEON, "kind": "MeshConfig",
        "metadata": {"name": "mesh", "namespace": "istio-system"},
        "spec": {"trustDomain": "cluster.local", "dnsSuffix": "global", "vipCidr": "240.0.0.0/16",
                 "localityLbSetting": {"enabled": True, "failover": [
                     {"from": "us-east", "to": "eu-west"}, {"from": "eu-west", "to": "us-east"}]}},
    })
    return objs


def _address(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def _version(e: int) -> str:
    return "v1" if e % 2 == 0 else "v2"


def service_objects(s: int, clusters: int, endpoints: int, first_address: int) -> list[dict]:
    """ServiceEntry + DestinationRule + VirtualService for service number ``s``."""
    name = f"svc-{s:05d}"
    namespace = f"ns-{s % NAMESPACES:02d}"
    host = f"{name}.{namespace}.svc.cluster.local"
    eps = []
    address = first_address
    for c in range(clusters):
        for e in range(endpoints):
            eps.append({
                "address": _address(address),
                "labels": {"app": name, "version": _version(e), CLUSTER_LABEL: f"cluster-{c}"},
                "serviceAccount": name,
            })
            address += 1
    se = {
        "apiVersion": ISTIO, "kind": "ServiceEntry", "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                 "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                 "endpoints": eps},
    }
    return [se, *routing_objects(name, namespace, host)]


def kubernetes_service_objects(s: int, clusters: int, endpoints: int, first_address: int) -> list[dict]:
    """Service number ``s`` as a team's Kubernetes manifests write it, then its DestinationRule and
    VirtualService: a v1 Service of the same host and port, and per cluster one EndpointSlice listing
    that cluster's endpoints (the same addresses as ``service_objects``), each naming its Pod, whose
    labels (app, version, tlsMode, cluster) and service account the endpoint takes."""
    name = f"svc-{s:05d}"
    namespace = f"ns-{s % NAMESPACES:02d}"
    host = f"{name}.{namespace}.svc.cluster.local"
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]},
    }
    objs = [service, *routing_objects(name, namespace, host)]
    address = first_address
    for c in range(clusters):
        cluster = f"cluster-{c}"
        listed, pods = [], []
        for e in range(endpoints):
            pod = f"{name}-{_version(e)}-c{c}-{e}"
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace,
                             "labels": {"app": name, "version": _version(e), TLS_MODE_LABEL: "istio",
                                        CLUSTER_LABEL: cluster}},
                "spec": {"serviceAccountName": name},
            })
            listed.append({"addresses": [_address(address)], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}})
            address += 1
        objs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-{cluster}", "namespace": namespace,
                         "labels": {SERVICE_NAME_LABEL: name, CLUSTER_LABEL: cluster}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": listed,
        })
        objs += pods
    return objs


def objects_per_service(clusters: int, endpoints: int, kubernetes: bool) -> int:
    """How many objects one service is: 3, or with ``kubernetes`` a Service, a DestinationRule, a
    VirtualService, an EndpointSlice per cluster and a Pod per endpoint."""
    return 3 + clusters + clusters * endpoints if kubernetes else 3


def routing_objects(name: str, namespace: str, host: str) -> list[dict]:
    """The service's DestinationRule (subsets v1/v2) and VirtualService (v1 90 / v2 10)."""
    meta = {"name": name, "namespace": namespace}
    dr = {
        "apiVersion": ISTIO, "kind": "DestinationRule", "metadata": dict(meta),
        "spec": {"host": host,
                 "trafficPolicy": {
                     "tls": {"mode": "ISTIO_MUTUAL"},
                     "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s",
                                          "baseEjectionTime": "30s", "maxEjectionPercent": 100},
                     "loadBalancer": {"simple": "LEAST_REQUEST"}},
                 "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                             {"name": "v2", "labels": {"version": "v2"}}]},
    }
    vs = {
        "apiVersion": ISTIO, "kind": "VirtualService", "metadata": dict(meta),
        "spec": {"hosts": [host],
                 "http": [{"name": "canary", "route": [
                     {"destination": {"host": host, "subset": "v1"}, "weight": 90},
                     {"destination": {"host": host, "subset": "v2"}, "weight": 10}]}]},
    }
    return [dr, vs]


def build_snapshot(services: int, clusters: int, endpoints: int, files: int,
                   kubernetes: bool = False) -> tuple[Snapshot, int]:
    """(the snapshot, how many objects it holds). Objects are spread evenly, in order, over ``files`` files.
    With ``kubernetes`` each service is written as Kubernetes objects (kubernetes_service_objects)."""
    objs = mesh_objects(clusters)
    address = int(ipaddress.IPv4Address("10.0.0.1"))
    per_service = clusters * endpoints
    if services * per_service >= 2 ** 24 - 2:
        raise SystemExit("too many endpoints for 10.0.0.0/8")
    objects_of = kubernetes_service_objects if kubernetes else service_objects
    for s in range(services):
        objs += objects_of(s, clusters, endpoints, address)
        address += per_service
    docs = [yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False) for obj in objs]
    files = max(1, min(files, len(docs)))
    width = len(str(files - 1))
    snapshot_files = {}
    for f in range(files):
        chunk = docs[f * len(docs) // files:(f + 1) * len(docs) // files]
        snapshot_files[f"mesh/part-{f:0{width}d}.yaml"] = "---\n".join(chunk).encode()
    return Snapshot("bench", snapshot_files, origin="bench/validate.py"), len(objs)


# --------------------------------------------------------------------------- measuring

def run_once(snapshot: Snapshot):
    t0 = time.perf_counter()
    parsed = parse(snapshot)
    t1 = time.perf_counter()
    valid, findings = validate_objects(parsed.objects)
    t2 = time.perf_counter()
    return parsed, valid, parsed.findings + findings, t1 - t0, t2 - t1


def in_child(fn) -> str:
    """``fn()``'s one-line answer, computed in a forked child process where the platform has fork, so
    that what it builds and imports leaves this process's memory, heap and caches as they were (the
    figures that follow are taken here); else in this process."""
    if not hasattr(os, "fork"):
        return fn()
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe and leave without running any exit handlers
        os.close(read)
        try:
            answer = fn()
        except BaseException as error:  # noqa: BLE001  (report anything, then leave)
            answer = f"check failed: {type(error).__name__}: {error}"
        os.write(write, answer.encode())
        sys.stdout.flush()
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    answer = b"".join(chunks).decode()
    return answer or f"check failed: the checking process ended with status {status} and no answer"


def same_as_service_entries(kube_objects, services: int, clusters: int, endpoints: int) -> str:
    """Whether the compiled views of the Kubernetes mesh (``kube_objects``, validated) are the
    ServiceEntry mesh's of the same size but for provenance: bench/compile.py's comparison, imported
    here (with bench/ off sys.path, where this file would shadow the Envoy protos' ``validate``)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from bench.compile import compare_with_service_entries
    return compare_with_service_entries(kube_objects, "bench", services, clusters, endpoints, gateway=False)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=3000, help="services (3 objects each); default 3000")
    ap.add_argument("--clusters", type=int, default=3, help="clusters, alternating over 2 networks; default 3")
    ap.add_argument("--endpoints", type=int, default=3, help="endpoints per service per cluster; default 3")
    ap.add_argument("--files", type=int, default=100, help="YAML files to spread the objects over; default 100")
    ap.add_argument("--kubernetes", action="store_true",
                    help="each service as a Kubernetes Service, an EndpointSlice per cluster and its Pods "
                         "instead of a ServiceEntry")
    ap.add_argument("--no-check", action="store_true",
                    help="with --kubernetes, skip comparing the compiled views with the ServiceEntry mesh's")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported; default 3")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing, run cProfile over one parse + validate and print the hot spots")
    args = ap.parse_args(argv)
    if min(args.services, args.clusters, args.endpoints, args.files, args.repeat) < 1:
        ap.error("every size must be at least 1")

    t0 = time.perf_counter()
    snapshot, count = build_snapshot(args.services, args.clusters, args.endpoints, args.files, args.kubernetes)
    size = sum(len(b) for b in snapshot.files.values())
    generated = time.perf_counter() - t0
    per_service = objects_per_service(args.clusters, args.endpoints, args.kubernetes)
    shape = ("Service, DestinationRule, VirtualService, EndpointSlice per cluster, Pod per endpoint"
             if args.kubernetes else "ServiceEntry, DestinationRule, VirtualService")
    print(f"generated {count:,} objects ({args.services:,} services x {per_service} ({shape}) + "
          f"{count - per_service * args.services} mesh), "
          f"{args.clusters} clusters, {args.services * args.clusters * args.endpoints:,} endpoints, "
          f"{len(snapshot.files)} files, {size:,} bytes in {generated:.2f} s")

    # First run: proves the mesh is valid (so the figures measure the real path) and warms the
    # schema caches (compiler.schemas loads and compiles the JSON Schemas once per process).
    parsed, valid, findings, cold_parse, cold_validate = run_once(snapshot)
    errors = [f for f in findings if f.level is Level.ERROR]
    if errors or len(parsed.objects) != count or len(valid) != count:
        print(f"FAIL: the generated mesh is not valid: {len(errors)} errors, {len(findings)} findings, "
              f"{len(parsed.objects)}/{count} objects parsed, {len(valid)}/{count} passed their schema",
              file=sys.stderr)
        for finding in sorted_findings(findings)[:5]:
            print("  " + finding.text(), file=sys.stderr)
        return 1
    warnings = len(findings) - len(errors)
    print(f"valid: 0 errors, {warnings} warnings; cold first run {cold_parse + cold_validate:.2f} s "
          f"(parse {cold_parse:.2f} s, validate {cold_validate:.2f} s, includes loading the schemas)")
    if args.kubernetes and not args.no_check:
        t0 = time.perf_counter()
        answer = in_child(lambda objects=valid: same_as_service_entries(objects, args.services, args.clusters,
                                                                        args.endpoints))
        print(f"{answer} [checked in {time.perf_counter() - t0:.1f} s, in a child process]")

    if args.profile:
        del parsed, valid, findings
        gc.collect()
        profiler = cProfile.Profile()
        profiler.enable()
        parsed = parse(snapshot)
        validate_objects(parsed.objects)
        profiler.disable()
        print("\n=== top 25 by cumulative time (one parse + validate_objects, under cProfile) ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.strip_dirs().sort_stats("cumulative").print_stats(25)
        print("=== top 25 by own time ===")
        stats.sort_stats("tottime").print_stats(25)
        return 0

    del parsed, valid, findings
    best_parse = best_validate = best_total = float("inf")
    for _ in range(args.repeat):
        gc.collect()
        _, _, _, t_parse, t_validate = run_once(snapshot)
        best_parse = min(best_parse, t_parse)
        best_validate = min(best_validate, t_validate)
        best_total = min(best_total, t_parse + t_validate)

    print(f"objects      {count:,}")
    print(f"files        {len(snapshot.files):,}")
    print(f"bytes        {size:,}")
    print(f"parse        {best_parse:.3f} s")
    print(f"validate     {best_validate:.3f} s")
    print(f"total        {best_total:.3f} s   (best of {args.repeat}; parse and validate are each best of "
          f"{args.repeat} too)")
    print(f"objects/s    {count / best_total:,.0f}")
    print(f"peak RSS     {peak_rss_mb():,.0f} MB   (whole process, generation included)")
    # Scale linearly to the target size so that smaller or larger runs still give a comparable verdict.
    at_target = best_total * TARGET_OBJECTS / count
    verdict = "PASS" if at_target < TARGET_SECONDS else "FAIL"
    scaled = "" if count == TARGET_OBJECTS else f", {count:,} objects in {best_total:.2f} s scaled linearly"
    print(f"target: {TARGET_OBJECTS:,} objects parsed and validated in < {TARGET_SECONDS:g} s: "
          f"{verdict} ({at_target:.2f} s{scaled})")
    return 0


if __name__ == "__main__":
    from reconciler import runtime
    runtime.for_command()  # the runtime policy of the galleon command this measures
    sys.exit(main())

"""Benchmark: the floor under bench/registry.py's first sync -- its bytes alone, sent by a server that does nothing else (prints figures, not a test).

bench/registry.py times its first sync from the first list until every one of its
1,000 streams has ACKed the EDS that holds the endpoints. Part of that time is
not Galleon's: the benchmark's client (one process standing for the thousand
Envoys) receives and parses 3.7 GB on the same two CPUs as the daemon. This
script measures that part alone: a gRPC server in a process of its own, with
every response made before the clock starts, answers each of --streams ADS
streams as the daemon does at a first sync (its CDS response, then once the
stream subscribes, its EDS response) and does nothing else. The client is the
benchmark's: each stream its own connection, every response parsed as a
DiscoveryResponse (as bench/ads.py's Proxy does, and Envoy does), the EDS
subscription sent before the CDS ACK, each ACK listing the names.

The responses are the size and shape of one view of `bench/registry.py
--sidecars` (it prints them: 1,500 assignments, an EDS response of 2.4 MB, a CDS
response of 1.4 MB over 500 clusters); a resource's contents do not matter here,
since a DiscoveryResponse's parse keeps each resource as bytes. The clock starts
when the last stream has subscribed, and runs until every stream has ACKed its
EDS response. Each round is a fresh pair of processes, as the first sync's
client is a process that has not yet received a large response.

    .venv/bin/python bench/sync_floor.py                 # 1,000 streams, 3 rounds
    .venv/bin/python bench/sync_floor.py --no-parse      # the same, the responses not parsed

See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import ads  # bench/ads.py: the benchmarks' client and /proc readings; it puts the repository on the path

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from compiler.xds_types import CLUSTER as CDS, ENDPOINT as EDS

METHOD = ads.Proxy.METHOD


def response(type_url: str, resources: int, size: int) -> bytes:
    """A serialized DiscoveryResponse of ``resources`` resources, ``size`` bytes in all (about)."""
    each = max(1, size // resources - len(type_url) - 8)
    made = discovery_pb2.DiscoveryResponse(version_info="v1", type_url=type_url, nonce="n1")
    for index in range(resources):
        made.resources.add(type_url=type_url, value=index.to_bytes(4, "big") * (each // 4))
    return made.SerializeToString()


def names(count: int) -> list[str]:
    return [f"outbound|8080||svc-{index}.ns-0.svc.cluster.local" for index in range(count)]


# =========================================================================== the server


def server_main(argv: list[str]) -> int:
    """``sync_floor.py --server STREAMS CDS_RESOURCES CDS_BYTES EDS_RESOURCES EDS_BYTES``: serves on a
    port it prints, and prints when it released the streams (all subscribed) as JSON."""
    streams, cds_resources, cds_bytes, eds_resources, eds_bytes = (int(value) for value in argv)
    answers = {CDS: response(CDS, cds_resources, cds_bytes), EDS: response(EDS, eds_resources, eds_bytes)}
    ads.raise_fd_limit()

    async def main() -> None:
        released = asyncio.Event()
        subscribed = [0]

        async def stream(requests, context):
            sent: set[str] = set()
            async for data in requests:
                request = discovery_pb2.DiscoveryRequest.FromString(data)
                if request.type_url == CDS and not sent:
                    subscribed[0] += 1
                    if subscribed[0] == streams:
                        print(json.dumps({"released": time.time(), "cpu": ads.process_cpu(os.getpid())}),
                              flush=True)
                        released.set()
                    await released.wait()
                if request.type_url in answers and not request.response_nonce and request.type_url not in sent:
                    sent.add(request.type_url)
                    yield answers[request.type_url]

        handler = grpc.stream_stream_rpc_method_handler(stream, request_deserializer=None,
                                                        response_serializer=None)
        service, method = METHOD.rsplit("/", 1)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20), ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service[1:], {method: handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(json.dumps({"port": port}), flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
    return 0


# =========================================================================== the client


async def client(port: int, streams: int, parse: bool, eds_names: list[str]) -> dict:
    """Open every stream, subscribe each to CDS; per stream, when its EDS response is ACKed."""
    deserialize = discovery_pb2.DiscoveryResponse.FromString if parse else None
    acked: list[float] = []
    errors: list[str] = []
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 256 << 20)])
        for _ in range(streams)]

    async def subscribe(channel):
        call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=deserialize)()
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CDS).SerializeToString())
        return call

    async def one(call) -> None:
        try:
            cds = await call.read()
            nonce = cds.nonce if parse else "n1"
            # Envoy subscribes to the clusters' assignments before it ACKs the clusters.
            await call.write(discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=eds_names)
                             .SerializeToString())
            await call.write(discovery_pb2.DiscoveryRequest(type_url=CDS, version_info="v1",
                                                            response_nonce=nonce).SerializeToString())
            eds = await call.read()
            nonce = eds.nonce if parse else "n1"
            await call.write(discovery_pb2.DiscoveryRequest(type_url=EDS, version_info="v1", response_nonce=nonce,
                                                            resource_names=eds_names).SerializeToString())
            acked.append(time.time())
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
        finally:
            call.cancel()

    calls = await asyncio.gather(*(subscribe(channel) for channel in channels))
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every stream open and subscribed: the server's clock
    await asyncio.gather(*(one(call) for call in calls))
    after = resource.getrusage(resource.RUSAGE_SELF)
    for channel in channels:
        await channel.close()
    return {"acked": acked, "errors": errors, "user": after.ru_utime - usage.ru_utime,
            "kernel": after.ru_stime - usage.ru_stime, "faults": after.ru_minflt - usage.ru_minflt}


def client_main(argv: list[str]) -> int:
    """``sync_floor.py --client PORT STREAMS PARSE(0|1) EDS_RESOURCES``: prints the round's figures as JSON."""
    port, streams, parse, eds_resources = int(argv[0]), int(argv[1]), argv[2] == "1", int(argv[3])
    ads.client_runtime()
    print(json.dumps(asyncio.run(client(port, streams, parse, names(eds_resources)))), flush=True)
    return 0


# =========================================================================== a round


def round_(args) -> dict:
    """One pair of processes: the server's released time and CPU, the client's figures."""
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*me, "--server", str(args.streams), str(args.cds_resources), str(args.cds_bytes),
                               str(args.eds_resources), str(args.eds_bytes)], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        ran = subprocess.run([*me, "--client", str(port), str(args.streams), "0" if args.no_parse else "1",
                              str(args.eds_resources)], stdout=subprocess.PIPE, text=True, timeout=1800)
        if ran.returncode:
            raise SystemExit(f"the client failed (exit {ran.returncode})")
        released = json.loads(server.stdout.readline())
        result = json.loads(ran.stdout)
        result["server_cpu"] = ads.process_cpu(server.pid) - released["cpu"]
        result["released"] = released["released"]
        return result
    finally:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--server"]:
        return server_main(argv[1:])
    if argv[:1] == ["--client"]:
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000, help="ADS streams, each its own connection; default 1000")
    ap.add_argument("--cds-resources", type=int, default=500, help="clusters in the CDS response; default 500")
    ap.add_argument("--cds-bytes", type=int, default=1_430_000, help="the CDS response's size in bytes; default 1,430,000")
    ap.add_argument("--eds-resources", type=int, default=1500,
                    help="assignments in the EDS response; default 1500")
    ap.add_argument("--eds-bytes", type=int, default=2_520_000, help="the EDS response's size in bytes; default 2,520,000")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each a fresh server and client; default 3")
    ap.add_argument("--no-parse", action="store_true",
                    help="the client does not parse the responses (what parsing them costs, by difference)")
    args = ap.parse_args(argv)
    if min(args.streams, args.cds_resources, args.cds_bytes, args.eds_resources, args.eds_bytes, args.rounds) < 1:
        ap.error("every size must be at least 1")
    total = args.streams * (args.cds_bytes + args.eds_bytes)
    print(f"{args.streams:,} ADS streams, each sent a CDS response ({args.cds_resources:,} clusters, "
          f"{args.cds_bytes / 2 ** 20:.1f} MB) and an EDS response ({args.eds_resources:,} assignments, "
          f"{args.eds_bytes / 2 ** 20:.1f} MB), {total / 2 ** 30:.2f} GB in all, by a server that does nothing "
          f"else; the client {'does not parse' if args.no_parse else 'parses'} them; {os.cpu_count()} CPUs, "
          f"grpcio {grpc.__version__}")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before starting: other work on this machine inflates the timings")
    walls = []
    for number in range(1, args.rounds + 1):
        result = round_(args)
        if result["errors"]:
            print(f"round {number}: {len(result['errors'])} streams failed: {result['errors'][:3]}")
            return 1
        times = [at - result["released"] for at in result["acked"]]
        walls.append(max(times))
        print(f"round {number}: every stream ACKed its EDS {max(times):.2f} s after the last subscribed "
              f"(per stream p50 {ads.ms(ads.percentile(times, 50))}, p99 {ads.ms(ads.percentile(times, 99))}); "
              f"the client's CPU {result['user']:.2f} s in user space, {result['kernel']:.2f} s in the kernel "
              f"({result['faults']:,} page faults: fresh memory for what it receives); the server's CPU "
              f"{result['server_cpu']:.2f} s")
    print(f"floor of a first sync of {args.streams:,} streams on this machine: {min(walls):.2f} s at best, {max(walls):.2f} s at worst "
          f"(bench/registry.py's target: {5.0:g} s, for this and the daemon's own work together)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A ``dir:`` registry for end-to-end tests: what runs in each cluster, written as the manifests
``kubectl get -o yaml`` prints, at ``ROOT/<cluster>/<namespace>/<Kind>/<name>.yaml`` (Nodes at
``ROOT/<cluster>/Node/<name>.yaml``), the layout ``galleon serve --registry dir:ROOT`` watches.

Each write lands whole (a file beside it, then renamed over it), as a registry's feed would see an
API server's object: the watcher never reads half a manifest. Every object keeps the resourceVersion
of an export, as a manifest edited by hand does: its content alone says it changed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

REGION, ZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone"
EXPORTED = "481516"  # the resourceVersion of every object, as when it was exported


class RegistryDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, cluster: str, kind: str, name: str, namespace: str = "") -> Path:
        folder = self.root / cluster
        return (folder / namespace / kind if namespace else folder / kind) / f"{name}.yaml"

    def write(self, cluster: str, obj: dict) -> Path:
        metadata = obj["metadata"]
        path = self.path(cluster, obj["kind"], metadata["name"], metadata.get("namespace", ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        exported = {**obj, "metadata": {**metadata, "resourceVersion": EXPORTED}}
        hidden = path.parent / f".{path.name}.tmp"  # dot files are not registry files
        hidden.write_text(yaml.safe_dump(exported, sort_keys=False))
        os.replace(hidden, path)
        return path

    def remove(self, cluster: str, kind: str, name: str, namespace: str = "") -> None:
        self.path(cluster, kind, name, namespace).unlink()

    def remove_namespace(self, cluster: str, namespace: str) -> None:
        shutil.rmtree(self.root / cluster / namespace)

    # --- the objects -------------------------------------------------------------------------------

    def node(self, cluster: str, name: str, region: str, zone: str) -> Path:
        return self.write(cluster, {"apiVersion": "v1", "kind": "Node",
                                    "metadata": {"name": name, "labels": {REGION: region, ZONE: zone}}})

    def service(self, cluster: str, name: str, namespace: str, ports: dict[str, int]) -> Path:
        """A ClusterIP Service selecting ``app: NAME``, each port by name."""
        return self.write(cluster, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"name": port_name, "port": number}
                                                          for port_name, number in ports.items()]}})

    def pod(self, cluster: str, name: str, namespace: str, app: str, ip: str, port: int, *,
            labels: dict[str, str] | None = None, ready: bool = True, node: str | None = None,
            service_account: str | None = None, port_name: str = "http") -> None:
        """A running pod of Service ``app`` and the EndpointSlice that lists it alone (so each pod
        serves the Service's port ``port_name`` on a port of its own): the Pod first, then the slice,
        as the kubelet and the EndpointSlice controller write them."""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": {"app": app, **(labels or {})}},
               "spec": {"containers": [{"name": app, "image": app}],
                        **({"nodeName": node} if node else {}),
                        **({"serviceAccountName": service_account} if service_account else {})},
               "status": {"phase": "Running", "podIP": ip,
                          "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
        endpoint = {"addresses": [ip], "conditions": {"ready": ready},
                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": name}}
        if node:
            endpoint["nodeName"] = node
        self.write(cluster, pod)
        self.write(cluster, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                             "metadata": {"name": name, "namespace": namespace,
                                          "labels": {"kubernetes.io/service-name": app}},
                             "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
                             "endpoints": [endpoint]})

    def remove_pod(self, cluster: str, name: str, namespace: str) -> None:
        """A pod deleted: its Pod, then its EndpointSlice."""
        self.remove(cluster, "Pod", name, namespace)
        self.remove(cluster, "EndpointSlice", name, namespace)

    # --- what is there now -------------------------------------------------------------------------

    def counts(self, cluster: str) -> dict[str, int]:
        """What /debug/registryz should count of a cluster: Services, Pods, Nodes, EndpointSlices,
        and the addresses the slices list."""
        folder = self.root / cluster
        files = [p for p in folder.rglob("*.yaml") if not p.name.startswith(".")]
        kinds = [p.parent.name for p in files]
        addresses = sum(len(e.get("addresses") or ())
                        for p in files if p.parent.name == "EndpointSlice"
                        for e in yaml.safe_load(p.read_text()).get("endpoints") or ())
        return {"services": kinds.count("Service"), "pods": kinds.count("Pod"), "nodes": kinds.count("Node"),
                "endpoint_slices": kinds.count("EndpointSlice"), "endpoints": addresses}

"""Generate schemas/<kind>.json from Istio's CRDs, and ObjectMeta and the Kubernetes kinds (Gateway
API's Gateway among them, as kubernetesgateway.json), with Istio's RequestAuthentication, which
validation reads only for its selector, from schemas/kubernetes.py.

    python -m schemas.generate ../shared/data/istio-crds.gen.yaml

Each file holds one subschema per served version under ``$defs`` plus a
top-level dispatch on ``apiVersion``, so the file is a valid JSON Schema on
its own. Kubernetes extensions JSON Schema does not know are translated
(``x-kubernetes-int-or-string``, ``nullable``) and every object that lists its
properties is closed (``additionalProperties: false``) unless the CRD says it
preserves unknown fields, so a misspelt key such as ``hsots`` is an error.
CEL rules (``x-kubernetes-validations``) are dropped: the semantic analyzers
in compiler/validate implement the checks that matter.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from compiler.kinds import api_version
from schemas.kubernetes import OBJECT_META, WRITTEN_KINDS, kubernetes_schemas, object_schema

KINDS = ("ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", "Gateway", "Sidecar")
GROUP = "networking.istio.io"
HERE = Path(__file__).resolve().parent

# Formats are protobuf type hints (int32, double, ...) rather than JSON Schema
# formats; the vocabulary keys below carry no meaning for jsonschema.
DROP_KEYS = {"description", "format", "x-kubernetes-validations", "x-kubernetes-list-type",
             "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
             "x-kubernetes-int-or-string", "nullable"}

def translate(node):
    if isinstance(node, list):
        return [translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: translate(value) for key, value in node.items()
           if key not in DROP_KEYS and not (key == "properties" and not isinstance(value, dict))}
    if "properties" in node and isinstance(node["properties"], dict):
        # property names are data, not schema keywords: translate only their values
        out["properties"] = {name: translate(sub) for name, sub in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    closed = "properties" in node and "additionalProperties" not in node
    if closed and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def file_schema(kind: str, group: str, versions: dict[str, dict]) -> dict:
    """The schema file of a kind, by the name Galleon knows it by (its title); one known by another name
    than the one written says that name (``x-galleon-kind``), which parse reads it by."""
    written = {"x-galleon-kind": WRITTEN_KINDS[kind]} if kind in WRITTEN_KINDS else {}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://galleon.io/schemas/{kind.lower()}.json",
        "title": kind,
        "x-galleon-group": group,
        **written,
        "$defs": versions,
        "allOf": [
            {"if": {"properties": {"apiVersion": {"const": api_version(group, v)}}, "required": ["apiVersion"]},
             "then": {"$ref": f"#/$defs/{v}"}}
            for v in sorted(versions)
        ],
    }


def write(path: Path, schema: dict) -> Path:
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    return path


def generate(crd_path: Path, out_dir: Path = HERE) -> list[Path]:
    """Every generated schema: the Istio kinds from their CRDs, ObjectMeta and the Kubernetes kinds."""
    written = [write(out_dir / "objectmeta.json", OBJECT_META)]
    for (group, kind), versions in kubernetes_schemas().items():
        written.append(write(out_dir / f"{kind.lower()}.json", file_schema(kind, group, versions)))
    with open(crd_path, "rb") as fh:
        docs = [d for d in yaml.load_all(fh, Loader=yaml.CSafeLoader) if d]
    for doc in docs:
        spec = doc.get("spec", {})
        kind = spec.get("names", {}).get("kind")
        if spec.get("group") != GROUP or kind not in KINDS:
            continue
        versions = {}
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            crd = version["schema"]["openAPIV3Schema"]
            # As the CRD says: ServiceEntry and WorkloadEntry need a spec, a Sidecar may have none.
            versions[version["name"]] = object_schema(kind, f"{GROUP}/{version['name']}",
                                                      {"spec": translate(crd["properties"]["spec"])},
                                                      tuple(r for r in crd.get("required", ()) if r == "spec"))
        written.append(write(out_dir / f"{kind.lower()}.json", file_schema(kind, GROUP, versions)))
    missing = sorted(k for k in KINDS if out_dir / f"{k.lower()}.json" not in written)
    if missing:
        raise SystemExit(f"{crd_path}: no served versions found for {', '.join(missing)}")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m schemas.generate PATH/TO/istio-crds.gen.yaml")
    for written_path in generate(Path(sys.argv[1])):
        print(f"wrote {written_path.relative_to(HERE.parent)}")

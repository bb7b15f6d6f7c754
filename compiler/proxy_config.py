"""What Istio rejects in a ``proxy.istio.io/config`` annotation: a ProxyConfig (istio/api
mesh/v1alpha1/proxy.proto) in YAML, which Istio applies over its default ProxyConfig and validates
(pkg/kube/inject/validate.go validateProxyConfig, pkg/config/validation/agent ValidateMeshConfigProxyConfig,
read at istio/istio 86c9f01f).

Istio reads the YAML as protobuf JSON (golang/protobuf's jsonpb): unknown fields are allowed (ignored), a
known field of the wrong type is an error, a null is no value, and of the fields of a oneof the last
declared wins. Then the merged config must keep a config path, binary path,
service cluster (or tracing service name) and discovery address, a drain duration in whole seconds,
ports in 1-65535, addresses (discovery, statsd, metrics and access log services, tracers) as
HOST:PORT, and a control plane auth policy of NONE or MUTUAL_TLS. Galleon checks the types of
ProxyConfig's own fields and of the messages those rules read; other nested messages (tracing
``tlsSettings``, ``proxyHeaders``, ``readinessProbe``...) only for being mappings.
"""
from __future__ import annotations

import datetime
import re
from typing import Any, Iterator

import yaml

# Field types: a scalar type's name, ("enum", names...), ("map", type), ("list", type), or a dict of
# a message's fields (by their JSON names); "message" is a message whose fields Galleon does not check.
STRING, INT32, UINT32, DOUBLE, BOOL, DURATION = "string", "int32", "uint32", "double", "bool", "duration"
BOOL_VALUE, INT32_VALUE, INT64_VALUE, MESSAGE = "BoolValue", "Int32Value", "Int64Value", "message"

AUTH_POLICIES = ("NONE", "MUTUAL_TLS", "INHERIT")  # numbers 0, 1, 1000
_REMOTE_SERVICE = {"address": STRING, "tlsSettings": MESSAGE, "tcpKeepalive": MESSAGE}
_POLL = {"pollDelay": DURATION, "fallback": BOOL_VALUE}
TRACERS = ("zipkin", "lightstep", "datadog", "stackdriver", "openCensusAgent")  # a oneof, in declaration order
KEY_PROVIDERS = ("cryptomb", "qat")  # a oneof, in declaration order
_TRACING = {
    "zipkin": {"address": STRING},
    "lightstep": {"address": STRING, "accessToken": STRING},
    "datadog": {"address": STRING},
    "stackdriver": {"debug": BOOL, "maxNumberOfAttributes": INT64_VALUE, "maxNumberOfAnnotations": INT64_VALUE,
                    "maxNumberOfMessageEvents": INT64_VALUE},
    "openCensusAgent": {"address": STRING, "context": ("list", ("enum", "UNSPECIFIED", "W3C_TRACE_CONTEXT", "GRPC_BIN",
                                                                   "CLOUD_TRACE_CONTEXT", "B3"))},
    "customTags": ("map", MESSAGE),
    "maxPathTagLength": UINT32,
    "sampling": DOUBLE,
    "tlsSettings": MESSAGE,
    "enableIstioTags": BOOL_VALUE,
}
_CONNECTION_SETTINGS = {
    "profile": ("enum", "SIDECAR", "EDGE"),
    "listenerPerConnectionBufferLimitBytes": INT32_VALUE,
    "clusterPerConnectionBufferLimitBytes": INT32_VALUE,
    "httpIdleTimeout": DURATION,
    "httpMaxConnectionDuration": DURATION,
    "httpDrainTimeout": DURATION,
    "httpRequestTimeout": DURATION,
    "httpRequestHeadersTimeout": DURATION,
    "httpStreamIdleTimeout": DURATION,
    "httpMaxStreamDuration": DURATION,
    "httpMaxConcurrentStreams": INT32_VALUE,
    "http2InitialStreamWindowSize": INT32_VALUE,
    "http2InitialConnectionWindowSize": INT32_VALUE,
    "httpHeadersWithUnderscoresAction": ("enum", *(f"HEADERS_WITH_UNDERSCORES_{action}" for action in (
        "UNSPECIFIED", "ALLOW", "REJECT_REQUEST", "DROP_HEADER"))),
    "httpMergeSlashes": BOOL_VALUE,
    "httpPathWithEscapedSlashesAction": ("enum", "PATH_WITH_ESCAPED_SLASHES_UNSPECIFIED", "KEEP_UNCHANGED",
                                         "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD"),
    "listenerConnectionLimit": INT32_VALUE,
    "globalDownstreamConnectionLimit": INT32_VALUE,
}
PROXY_CONFIG: dict[str, Any] = {
    "configPath": STRING,
    "binaryPath": STRING,
    "serviceCluster": STRING,
    "tracingServiceName": ("enum", "APP_LABEL_AND_NAMESPACE", "CANONICAL_NAME_ONLY", "CANONICAL_NAME_AND_NAMESPACE"),
    "drainDuration": DURATION,
    "discoveryAddress": STRING,
    "discoveryRefreshDelay": DURATION,
    "zipkinAddress": STRING,
    "statsdUdpAddress": STRING,
    "envoyMetricsServiceAddress": STRING,
    "proxyAdminPort": INT32,
    "availabilityZone": STRING,
    "controlPlaneAuthPolicy": ("enum", *AUTH_POLICIES),
    "customConfigFile": STRING,
    "statNameLength": INT32,
    "concurrency": INT32_VALUE,
    "proxyBootstrapTemplatePath": STRING,
    "interceptionMode": ("enum", "REDIRECT", "TPROXY", "NONE"),
    "tracing": _TRACING,
    "sds": MESSAGE,
    "envoyAccessLogService": _REMOTE_SERVICE,
    "envoyMetricsService": _REMOTE_SERVICE,
    "proxyMetadata": ("map", STRING),
    "runtimeValues": ("map", STRING),
    "statusPort": INT32,
    "extraStatTags": ("list", STRING),
    "gatewayTopology": MESSAGE,
    "terminationDrainDuration": DURATION,
    "meshId": STRING,
    "readinessProbe": MESSAGE,
    "proxyStatsMatcher": {"inclusionPrefixes": ("list", STRING), "inclusionSuffixes": ("list", STRING),
                          "inclusionRegexps": ("list", STRING)},
    "holdApplicationUntilProxyStarts": BOOL_VALUE,
    "caCertificatesPem": ("list", STRING),
    "image": MESSAGE,
    "privateKeyProvider": {"cryptomb": _POLL, "qat": _POLL},
    "proxyHeaders": MESSAGE,
    "fileFlushInterval": DURATION,
    "fileFlushMinSizeKb": UINT32,
    "statsCompression": BOOL_VALUE,
    "connectionSettings": _CONNECTION_SETTINGS,
}

_BUDGET = 10_000  # values looked at, at most: a YAML value may alias a node many times over


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def _field(message: dict, name: str) -> Any:
    """A message's field by its JSON name or its proto name (both are accepted; the JSON name wins)."""
    value = message.get(name)
    return message.get(_snake(name)) if value is None else value


def _chosen(message: dict, oneof: tuple[str, ...]) -> tuple[str, Any] | None:
    """(name, value) of the member of a oneof that is set: the last declared of those given."""
    given = [(name, _field(message, name)) for name in oneof if _field(message, name) is not None]
    return given[-1] if given else None


_GO_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
               "h": 3600 * 10**9}


def go_duration(text: str) -> int | None:
    """Go's time.ParseDuration, in nanoseconds (``1h30m``, ``-1.5s``, ``0``); None if it is none."""
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if body == "0":
        return 0
    total, at = 0, 0
    for match in _DURATION_PART.finditer(body):
        number = match.group(1)
        if match.start() != at or number in ("", "."):
            return None
        whole, _, fraction = number.partition(".")
        total += int(whole or "0") * _UNIT_NANOS[match.group(2)]
        if fraction:
            total += int(fraction) * _UNIT_NANOS[match.group(2)] // 10 ** len(fraction)
        at = match.end()
    if at != len(body) or not body:
        return None
    return sign * total


def _integer(value: Any, low: int, high: int) -> int | None:
    """A protobuf-JSON integer: a number or a decimal string, within [low, high]."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _GO_INT.fullmatch(value):  # (jsonpb takes a quoted number too)
        value = int(value)
    return value if isinstance(value, int) and low <= value <= high else None


def _type_errors(value: Any, kind: Any, path: str, budget: list[int]) -> Iterator[str]:
    budget[0] -= 1
    if value is None or budget[0] < 0:
        return
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            yield f"{path}: want a mapping, got {value!r}"
            return
        for name, field_kind in kind.items():
            field_value = _field(value, name)
            if field_value is not None:
                yield from _type_errors(field_value, field_kind, f"{path}.{name}" if path else name, budget)
        return
    wanted = None
    if kind == MESSAGE:
        wanted = None if isinstance(value, dict) else "a mapping"
    elif kind == STRING:  # (a YAML timestamp is a string to Istio's YAML reader)
        wanted = None if isinstance(value, (str, datetime.date)) else "a string"
    elif kind in (INT32, INT32_VALUE):
        wanted = None if _integer(value, -2**31, 2**31 - 1) is not None else "a 32-bit integer"
    elif kind == UINT32:
        wanted = None if _integer(value, 0, 2**32 - 1) is not None else "an unsigned 32-bit integer"
    elif kind == INT64_VALUE:
        wanted = None if _integer(value, -2**63, 2**63 - 1) is not None else "a 64-bit integer"
    elif kind == DOUBLE:
        number = (isinstance(value, (int, float)) and not isinstance(value, bool)) or \
            (isinstance(value, str) and (_NUMBER.fullmatch(value) or value in ("NaN", "Infinity", "-Infinity")))
        wanted = None if number else "a number"
    elif kind in (BOOL, BOOL_VALUE):
        wanted = None if isinstance(value, bool) else "true or false"
    elif kind == DURATION:
        wanted = None if isinstance(value, str) and go_duration(value) is not None else "a duration (45s, 1m30s)"
    elif kind[0] == "enum":
        names = kind[1:]
        ok = (isinstance(value, str) and value in names) or (isinstance(value, int) and not isinstance(value, bool))
        wanted = None if ok else f"one of {', '.join(names)}"
    elif kind[0] in ("map", "list"):
        items = value.items() if kind[0] == "map" and isinstance(value, dict) else \
            enumerate(value) if kind[0] == "list" and isinstance(value, list) else None
        if items is None:
            wanted = "a mapping" if kind[0] == "map" else "a list"
        else:
            for key, item in items:  # (a null item is an empty one)
                yield from _type_errors(item, kind[1], f"{path}[{key!r}]" if kind[0] == "map" else f"{path}[{key}]",
                                        budget)
    if wanted:
        yield f"{path}: want {wanted}, got {value!r}"


def _port_error(port: int) -> str | None:
    return None if 1 <= port <= 65535 else f"port number {port} must be in the range 1..65535"


def split_host_port(text: str) -> tuple[str, str] | str:
    """Go's net.SplitHostPort: (host, port), or why not."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return f"address {text}: missing ']' in address"
        rest = text[end + 1:]
        if not rest.startswith(":"):
            return f"address {text}: {'too many colons' if rest else 'missing port'} in address"
        host, port = text[1:end], rest[1:]
        if "[" in host or "]" in host:
            return f"address {text}: unexpected '[' in address"
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            return f"address {text}: missing port in address"
        if ":" in host:
            return f"address {text}: too many colons in address"
        if "[" in host or "]" in host:
            return f"address {text}: unexpected '[' or ']' in address"
    if "[" in port or "]" in port:
        return f"address {text}: unexpected ']' in address"
    return host, port


def proxy_address_error(address: str) -> str | None:
    """Istio's ValidateProxyAddress: HOST:PORT with a DNS name or IP and a port in 1-65535."""
    from .validate.syntax import fqdn_error, is_ip
    split = split_host_port(address)
    if isinstance(split, str):
        return f"unable to split {address!r}: {split}"
    host, port = split
    if not re.fullmatch(r"[+-]?[0-9]+", port):
        return f"port ({port}) is not a number"
    problem = _port_error(int(port))
    if problem:
        return problem
    if fqdn_error(host) and not is_ip(host):
        return f"{host!r} is not a valid hostname or an IP address"
    return None


def _nanos(value: Any) -> int | None:
    return go_duration(value) if isinstance(value, str) else None


def _rule_errors(config: dict) -> Iterator[str]:
    """ValidateMeshConfigProxyConfig of Istio's default ProxyConfig with ``config`` applied (types
    already checked)."""
    get = _field
    for name, what in (("configPath", "config path must be set"), ("binaryPath", "binary path must be set")):
        if get(config, name) == "":
            yield what
    if get(config, "tracingServiceName") is None and get(config, "serviceCluster") == "":
        yield "service cluster must be specified"
    drain = _nanos(get(config, "drainDuration"))
    if drain is not None:
        if drain < 10**6:
            yield "invalid drain duration: duration must be greater than 1ms"
        elif drain % 10**6:
            yield "invalid drain duration: only durations to ms precision are supported"
        elif drain % 10**9:
            yield "drain time only supports durations to seconds precision"
    discovery = get(config, "discoveryAddress")
    if discovery == "":
        yield "discovery address must be set to the proxy discovery service"
    elif discovery is not None:
        problem = proxy_address_error(discovery)
        if problem:
            yield f"invalid discovery address: {problem}"
    tracer, settings = _chosen(get(config, "tracing") or {}, TRACERS) or (None, {})
    if tracer == "lightstep":
        address = get(settings, "address") or ""
        if not address:
            yield "invalid lightstep config: address is required"
        problem = proxy_address_error(address)
        if problem:
            yield f"invalid lightstep config: invalid lightstep address: {problem}"
        if not get(settings, "accessToken"):
            yield "invalid lightstep config: access token is required"
    elif tracer in ("zipkin", "datadog"):
        problem = proxy_address_error((get(settings, "address") or "").replace("$(HOST_IP)", "127.0.0.1", 1))
        if problem:
            yield f"invalid {tracer} config: {problem}"
    for name in ("statsdUdpAddress", "envoyMetricsServiceAddress"):
        address = get(config, name)
        problem = proxy_address_error(address) if address else None
        if problem:
            yield f"invalid {_snake(name).replace('_', ' ').strip()} {address!r}: {problem}"
    for name in ("envoyMetricsService", "envoyAccessLogService"):
        address = get(get(config, name) or {}, "address")
        problem = proxy_address_error(address) if address else None
        if problem:
            yield f"invalid {name}.address {address!r}: {problem}"
    for name, default in (("proxyAdminPort", 15000), ("statusPort", 15020)):
        value = get(config, name)
        port = _integer(value, -2**31, 2**31) if value is not None else default
        problem = _port_error(port) if port is not None else None  # (not an int32: the type check says so)
        if problem:
            yield f"invalid {_snake(name).replace('_', ' ')}: {problem}"
    policy = get(config, "controlPlaneAuthPolicy")
    if policy is not None and policy not in ("NONE", "MUTUAL_TLS", 0, 1):
        yield f"invalid authentication policy: unrecognized control plane auth policy {policy!r}"
    provider = get(config, "privateKeyProvider")
    if isinstance(provider, dict):
        chosen = _chosen(provider, KEY_PROVIDERS)
        if chosen is None:
            yield "invalid private key provider configuration: private key provider configuration is required"
            yield "invalid private key provider configuration: unknown private key provider"
        else:
            name, settings = chosen
            if get(settings, "pollDelay") is None:
                yield f"invalid private key provider configuration: {name}: pollDelay is required"
            elif _nanos(get(settings, "pollDelay")) == 0:
                yield f"invalid private key provider configuration: {name}: pollDelay must be non zero"
    yield from _connection_errors(get(config, "connectionSettings"))


def _connection_errors(settings: Any) -> Iterator[str]:
    if not isinstance(settings, dict):
        return
    get = lambda name: _field(settings, name)  # noqa: E731
    for name in ("listenerPerConnectionBufferLimitBytes", "clusterPerConnectionBufferLimitBytes"):
        number = _integer(get(name), -2**31, 2**31)
        if number is not None and number < 0:
            yield f"invalid connection settings: {_snake(name)} must be non-negative"
    for name in ("httpIdleTimeout", "httpMaxConnectionDuration", "httpDrainTimeout", "httpRequestTimeout",
                 "httpRequestHeadersTimeout", "httpStreamIdleTimeout", "httpMaxStreamDuration"):
        nanos = _nanos(get(name))
        if nanos is not None and nanos < 0:
            yield f"invalid connection settings: {_snake(name)} must be non-negative"
    for name, low, what in (("httpMaxConcurrentStreams", 1, "must be positive"),
                            ("http2InitialStreamWindowSize", 65535, "must be at least 65535"),
                            ("http2InitialConnectionWindowSize", 65535, "must be at least 65535"),
                            ("listenerConnectionLimit", 1, "must be positive"),
                            ("globalDownstreamConnectionLimit", 1, "must be positive")):
        number = _integer(get(name), -2**31, 2**31)
        if number is not None and number < low:
            yield f"invalid connection settings: {_snake(name)} {what}"


def proxy_config_errors(text: str) -> list[str]:
    """Istio's reasons to reject ``text`` as a ``proxy.istio.io/config`` value; [] when it accepts it."""
    try:
        documents = yaml.safe_load_all(text)
        config = next(documents, None)
    except yaml.YAMLError as error:
        return [f"failed to convert to apply proxy config: {' '.join(str(error).split())}"]
    except RecursionError:
        return ["failed to convert to apply proxy config: nested too deeply"]
    if config is None:
        return []  # an empty or null value changes nothing
    if not isinstance(config, dict):
        return [f"failed to convert to apply proxy config: want a mapping of ProxyConfig fields, got {config!r}"]
    problems = list(_type_errors(config, PROXY_CONFIG, "", [_BUDGET]))
    if problems:
        return [f"failed to convert to apply proxy config: {problem}" for problem in problems]
    return list(_rule_errors(config))

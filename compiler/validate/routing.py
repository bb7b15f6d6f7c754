"""Checks on VirtualServices and Gateways as routing tables."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..findings import Level
from ..hosts import fqdn
from ..parse import SourceObject
from .framework import analyzer, repeats
from .index import EVERYWHERE, Index, export_scopes


def _routes(vs):
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(vs.spec.get(section, [])):
            if rule.get("route"):
                yield ("spec", section, i, "route"), rule["route"]


@analyzer("duplicate-virtual-service-host", "GAL0101", Level.ERROR,
          "a VirtualService lists the same host twice", local=(), kinds=("VirtualService",))
def duplicate_virtual_service_host(index: Index):
    for vs in index.by_kind["VirtualService"]:
        hosts = vs.spec.get("hosts", [])
        for i, first in repeats(fqdn(host, vs.namespace) for host in hosts):
            yield vs, ("spec", "hosts", i), f"host {hosts[i]!r} is listed twice (also hosts[{first}]); remove one"


@analyzer("negative-weight", "GAL0103", Level.ERROR, "a route destination has a negative weight",
          local=(), kinds=("VirtualService",))
def negative_weight(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, route in _routes(vs):
            for j, dest in enumerate(route):
                if dest.get("weight", 0) < 0:
                    yield vs, path + (j, "weight"), f"weight {dest['weight']} is negative; use 0 or more"


@analyzer("all-weights-zero", "GAL0104", Level.ERROR,
          "every destination of a route has weight 0, so the route sends traffic nowhere",
          local=(), kinds=("VirtualService",))
def all_weights_zero(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for path, route in _routes(vs):
            if all("weight" in d for d in route) and not any(d["weight"] for d in route):
                yield vs, path, "every destination has weight 0; give at least one a positive weight"


def _host_matches(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: symmetric, a wildcard (``*``, ``*.x``) on either side covers the
    other's suffix; no short-name expansion."""
    if a.startswith("*") and b.startswith("*"):
        longer, shorter = (b, a) if len(a) < len(b) else (a, b)
        return longer[1:].endswith(shorter[1:])
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


@analyzer("conflicting-mesh-virtual-service-hosts", "IST0109", Level.ERROR,
          "two VirtualServices bound to the mesh claim the same host in a namespace they are both exported to")
def conflicting_mesh_virtual_service_hosts(index: Index):
    # As Istio's ConflictingMeshGatewayHostsAnalyzer: each mesh VirtualService claims its hosts (short
    # names expanded in its namespace) in each scope of its exportTo ("*": every namespace). Claims in
    # one scope conflict when their hosts are equal; a claim in a namespace also conflicts with the
    # claims of VirtualServices exported everywhere whose host matches it by wildcard. Two scopes that
    # are not "*" never meet: a VirtualService not exported to a namespace conflicts with nothing there.
    claims: dict[tuple[str, str], list[tuple[SourceObject, int]]] = defaultdict(list)
    for vs in index.by_kind["VirtualService"]:
        gateways = vs.spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            continue
        scopes = export_scopes(vs.namespace, vs.spec.get("exportTo") or ())
        for scope in sorted(scopes - {"~"}):  # "~" (exported nowhere): a ServiceEntry's only
            for i, host in enumerate(vs.spec.get("hosts") or []):
                claims[(scope, fqdn(host, vs.namespace))].append((vs, i))
    everywhere = {host: owners for (scope, host), owners in claims.items() if scope == EVERYWHERE}
    # the hosts exported everywhere that a namespace's claim may match other than by equality
    wildcards = sorted(host for host in everywhere if host.startswith("*"))
    plain = sorted(host for host in everywhere if not host.startswith("*"))
    reported: set[tuple] = set()
    # Sorted, so each VirtualService is reported once, with the same conflict on every run.
    for (scope, host), owners in sorted(claims.items()):
        if scope != EVERYWHERE:
            others = [host] if host in everywhere else []
            others += (other for other in wildcards if other != host and _host_matches(host, other))
            if host.startswith("*"):  # rare: a wildcard host not exported everywhere
                others += (other for other in plain if other != host and _host_matches(host, other))
            owners = owners + [owner for other in sorted(others) for owner in everywhere[other]]
        if len({vs.key for vs, _ in owners}) < 2:
            continue  # one VirtualService naming a host twice is GAL0101's
        names = ", ".join(sorted({f"{vs.namespace}/{vs.name}" for vs, _ in owners}))
        hosts = sorted({fqdn(vs.spec["hosts"][i], vs.namespace) for vs, i in owners})
        what = f"the same host {host!r}" if len(hosts) == 1 else \
            "overlapping hosts " + ", ".join(map(repr, hosts))
        together = "both" if names.count(",") == 1 else "all"
        where = f"and are {together} exported to every namespace" if scope == EVERYWHERE else \
            f"in namespace {scope!r}, to which they are {together} exported"
        for vs, i in owners:
            if vs.key in reported:
                continue
            reported.add(vs.key)
            yield vs, ("spec", "hosts", i), (
                f"The VirtualServices {names} associated with the mesh gateway define {what} {where}, which "
                "can lead to undefined behavior; merge the conflicting VirtualServices into a single resource")


# --- rule reachability: Istio's analyzeUnreachable{HTTP,TCP,TLS}Rules (its webhook warnings) ----------

_SECTIONS = ("http", "tcp", "tls")
_MATCH_MAPS = frozenset({"headers", "queryParams", "withoutHeaders", "sourceLabels"})


def _frozen(value):
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list):
        return tuple(map(_frozen, value))
    return value


def _match_key(match: dict, section: str):
    """What makes two matches the same, as Istio compares them (the JSON of the Go message): an HTTP
    match's name does not count; unset, zero, false, empty strings, lists and maps are all absent; a
    present but empty StringMatch (``uri: {}``) is not; map order does not count, list order does."""
    kept = []
    for field, value in match.items():
        if section == "http" and field == "name":
            continue
        if value is None or value is False or (isinstance(value, (int, float, str)) and not value):
            continue
        if (isinstance(value, list) or field in _MATCH_MAPS) and not value:
            continue
        kept.append((field, _frozen(value)))
    return tuple(sorted(kept))


def _go_quote(text: str) -> str:
    """Go's %q of a string."""
    escapes = {"\\": "\\\\", '"': '\\"', "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
               "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _rule_name(rule: dict, section: str, i: int) -> str:
    name = rule.get("name") if section == "http" else None
    return _go_quote(name) if isinstance(name, str) and name else f"#{i}"


def _match_name(match, section: str, j: int) -> str:
    name = match.get("name") if section == "http" and isinstance(match, dict) else None
    return _go_quote(name) if isinstance(name, str) and name else f"#{j}"


def _rule_path(rule: dict, section: str, i: int):
    """A rule, at its name when it has one (the line that names it)."""
    return ("spec", section, i, "name") if section == "http" and rule.get("name") else ("spec", section, i)


def _string_match(match) -> str:
    """Istio's assignExactOrPrefix: "exact:v", "prefix:v", or "" (a regex, empty, or unset)."""
    if not isinstance(match, dict):
        return ""
    if match.get("exact"):
        return "exact:" + match["exact"]
    if match.get("prefix"):
        return "prefix:" + match["prefix"]
    return ""


@dataclass(frozen=True)
class _PrefixMatch:
    """What Istio's prefix-overlap pass (genMatchHTTPRoutes) keeps of an HTTP match with a URI prefix."""

    rule: str
    match: str
    path: tuple
    prefix: str
    port: int
    method: str
    authority: str
    headers: dict
    query: dict
    without: dict

    def covers(self, later: _PrefixMatch) -> bool:
        """Istio's coveredValidation(self, later)."""
        def within(mine: str, theirs: str) -> bool:
            return mine == theirs or mine.startswith(theirs)
        if not later.prefix.startswith(self.prefix) or later.port != self.port:
            return False
        if not within(self.method, later.method) or not within(self.authority, later.authority):
            return False
        return all(len(mine) == len(theirs) and all(key in theirs and within(value, theirs[key])
                                                    for key, value in mine.items())
                   for mine, theirs in ((self.headers, later.headers), (self.query, later.query),
                                        (self.without, later.without)))


def _prefix_match(rule: str, match: dict, j: int, path: tuple) -> _PrefixMatch | None:
    uri = match.get("uri")
    prefix = uri.get("prefix") if isinstance(uri, dict) else None
    if not prefix:
        return None
    return _PrefixMatch(
        rule, _match_name(match, "http", j), path, prefix, match.get("port") or 0,
        _string_match(match.get("method")) or "exact:GET",  # Istio: no method counts as GET
        _string_match(match.get("authority")),
        *({key: _string_match(value) for key, value in (match.get(field) or {}).items()}
          for field in ("headers", "queryParams", "withoutHeaders")))


def _unreachable(vs: SourceObject):
    """("rule" | "match", path, message) for every rule no request can reach and every match that
    takes no request, as Istio's validation finds them, per list (http, tcp, tls)."""
    for section in _SECTIONS:
        rules = vs.spec.get(section) or []
        if len(rules) < 2 and all(len(rule.get("match") or ()) < 2 for rule in rules if isinstance(rule, dict)):
            continue  # the common case: one rule with one match at most hides nothing
        seen: dict = {}  # match key -> the first rule that has it
        catch_all = -1  # the first rule without a match
        prefixes: list[_PrefixMatch] = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            name = _rule_name(rule, section, i)
            matches = rule.get("match") or []
            if not matches:
                if catch_all >= 0:
                    yield "rule", _rule_path(rule, section, i), (
                        f"VirtualService rule {name} not used (only the last rule can have no matches): rule "
                        f"{_rule_name(rules[catch_all], section, catch_all)} before it has no match either and "
                        "takes every request; give one of them a match or remove one")
                else:
                    catch_all = i
                continue
            if catch_all >= 0:
                # Istio warns once per match, with the same text: one finding for the rule
                yield "rule", _rule_path(rule, section, i), (
                    f"VirtualService rule {name} not used (route without matches defined before): rule "
                    f"{_rule_name(rules[catch_all], section, catch_all)} has no match and takes every request; "
                    "move that rule last")
                continue
            duplicates = 0
            for j, match in enumerate(matches):
                key = _match_key(match, section) if isinstance(match, dict) else None
                if key in seen:
                    first = seen[key]
                    duplicates += 1
                    yield "match", ("spec", section, i, "match", j), (
                        f"VirtualService rule {name} match {_match_name(match, section, j)} is not used "
                        f"(duplicate/overlapping match in rule {_rule_name(rules[first], section, first)}): "
                        "an earlier match is the same; remove this one")
                    continue
                seen[key] = i
                if section == "http" and isinstance(match, dict):
                    found = _prefix_match(name, match, j, ("spec", section, i, "match", j))
                    if found is not None:
                        prefixes.append(found)
            if duplicates == len(matches):
                yield "rule", _rule_path(rule, section, i), (
                    f"VirtualService rule {name} not used (all matches used by prior rules): every request "
                    "it matches is taken by an earlier rule; remove it or change its matches")
        for a, earlier in enumerate(prefixes):
            for later in prefixes[a + 1:]:
                if later.prefix != earlier.prefix and earlier.covers(later):
                    yield "match", later.path, (
                        f"VirtualService rule {later.rule} match {later.match} of prefix {later.prefix} is not used "
                        f"(duplicate/overlapping match in rule {earlier.match} of prefix {earlier.prefix} on "
                        f"{earlier.rule}): the earlier, shorter prefix takes its requests (a match without a "
                        "method counts as GET); put the longer prefix first")


@analyzer("virtual-service-unreachable-rule", "IST0130", Level.WARNING,
          "a VirtualService rule no request can reach: an earlier rule without a match, or earlier rules "
          "with all its matches", local=(), kinds=("VirtualService",))
def virtual_service_unreachable_rule(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for what, path, message in _unreachable(vs):
            if what == "rule":
                yield vs, path, message


@analyzer("virtual-service-ineffective-match", "IST0131", Level.INFO,
          "a VirtualService match that takes no request: an earlier match is the same, or an earlier URI "
          "prefix covers it", local=(), kinds=("VirtualService",))
def virtual_service_ineffective_match(index: Index):
    for vs in index.by_kind["VirtualService"]:
        for what, path, message in _unreachable(vs):
            if what == "match":
                yield vs, path, message


@analyzer("duplicate-gateway-port-name", "GAL0106", Level.ERROR,
          "two servers of one Gateway use the same port name")
def duplicate_gateway_port_name(index: Index):
    for gw in index.by_kind["Gateway"]:
        servers = gw.spec.get("servers", [])
        # an unnamed port gets a unique placeholder: only names can clash
        names = [(server.get("port") or {}).get("name") or object() for server in servers]
        for i, first in repeats(names):
            yield gw, ("spec", "servers", i, "port", "name"), (
                f"port name {names[i]!r} is already used by servers[{first}]; port names must be unique")

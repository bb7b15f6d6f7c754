"""Cross-cluster VIPs: allocation (compiler/vips.py), the model and compiler using them, and their checks."""
from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.model import build_mesh
from compiler.revision import load
from compiler.view import make_view
from compiler.vips import DEFAULT_CIDR, Assignment, Pool, allocate, explicit_address, under_suffix
from compiler.xds import compile_view, config_dump
from compiler.xds_types import LISTENER, ROUTE
from tests.conftest import ONE_CLUSTER, check, mesh_from, snapshot_of

CIDR = "10.0.0.0/24"


def names(count: int, prefix: str = "svc") -> list[str]:
    return [f"{prefix}-{i:02d}.bookinfo.global" for i in range(count)]


def hash_address(name: str, cidr: str = CIDR) -> str:
    """Where a name's probe starts: the address it gets when nothing is in the way."""
    pool = Pool(cidr)
    return pool.at(pool.start(name))


def colliding_pair(cidr: str) -> tuple[str, str]:
    """Two names whose hashes start at the same address of ``cidr``."""
    seen: dict[str, str] = {}
    for name in names(1000, "c"):
        start = hash_address(name, cidr)
        if start in seen:
            return seen[start], name
        seen[start] = name
    raise AssertionError("no collision in 1000 names")


def assert_sound(assignment: Assignment, cidr: str, wanted) -> None:
    """Every name placed once, each address in the pool and given once."""
    pool = Pool(cidr)
    assert set(assignment.addresses).isdisjoint(assignment.unassigned)
    assert set(assignment.addresses) | set(assignment.unassigned) == set(wanted)
    allocated = [a for n, a in assignment.addresses.items() if n not in assignment.explicit]
    assert all(address in pool for address in allocated)
    assert len(set(assignment.addresses.values())) == len(assignment.addresses)


# --- allocate ------------------------------------------------------------------------------------------


def test_same_arguments_same_result_whatever_the_order_of_names():
    wanted = names(40)
    first = allocate(wanted, CIDR)
    for seed in range(5):
        shuffled = list(wanted)
        random.Random(seed).shuffle(shuffled)
        assert allocate(shuffled, CIDR) == first
    assert allocate(list(reversed(wanted)), CIDR, keep={wanted[0]: "10.0.0.200"}, held={"10.0.0.9"}) == \
        allocate(wanted, CIDR, keep={wanted[0]: "10.0.0.200"}, held={"10.0.0.9"})
    assert list(first.addresses) == sorted(first.addresses)
    assert_sound(first, CIDR, wanted)


def test_names_may_be_any_iterable():
    wanted = names(10)
    assert allocate((name for name in wanted), CIDR) == allocate(wanted, CIDR)


def test_a_lone_name_gets_its_hash_address():
    name = "ratings.bookinfo.global"
    assert allocate([name], CIDR).addresses == {name: hash_address(name)}
    assert ipaddress.ip_address(allocate([name]).addresses[name]) in ipaddress.ip_network(DEFAULT_CIDR)


def test_ipv4_network_and_broadcast_addresses_are_never_given():
    wanted = names(14)
    assignment = allocate(wanted, "10.0.0.16/28")  # 14 usable addresses for 14 names: all of them
    assert assignment.unassigned == ()
    assert sorted(assignment.addresses.values(), key=ipaddress.ip_address) == [f"10.0.0.{i}" for i in range(17, 31)]
    pool = Pool("10.0.0.16/28")
    assert pool.size == 14 and "10.0.0.16" not in pool and "10.0.0.31" not in pool and "10.0.0.17" in pool
    assert "10.0.1.17" not in pool and "not an ip" not in pool and "fd00::1" not in pool
    # A fifteenth name finds no room: .16 and .31 stay out even then.
    assert allocate(names(15), "10.0.0.16/28").unassigned == (names(15)[-1],)


def test_explicit_addresses_win_and_are_never_given_to_another_name():
    first, second = colliding_pair(CIDR)
    start = hash_address(first)
    other = "explicit.bookinfo.global"
    assignment = allocate([first, second, other], CIDR, explicit={other: start})
    assert assignment.addresses[other] == start
    assert start not in (assignment.addresses[first], assignment.addresses[second])
    assert assignment.explicit == {other}
    assert_sound(assignment, CIDR, [first, second, other])
    # An explicit address outside the pool is the name's own all the same.
    outside = allocate([other, first], CIDR, explicit={other: "192.0.2.7"})
    assert outside.addresses == {other: "192.0.2.7", first: start}
    # ... and an explicit address wins over another name's kept one: that name moves.
    moved = allocate([first, other], CIDR, explicit={other: "10.0.0.50"}, keep={first: "10.0.0.50"})
    assert moved.addresses[other] == "10.0.0.50"
    assert moved.addresses[first] == start
    # Explicit entries for names not asked for are not reported.
    assert allocate([first], CIDR, explicit={other: "10.0.0.50"}) == Assignment({first: start})


def test_keep_is_honoured_when_valid():
    wanted = names(20)
    keep = {name: f"10.0.0.{200 + i}" for i, name in enumerate(wanted[:10])}
    assignment = allocate(wanted, CIDR, keep=keep)
    assert {n: assignment.addresses[n] for n in keep} == keep
    assert_sound(assignment, CIDR, wanted)
    # A kept address is kept even where it is another name's hash start: the newcomer moves on.
    first, second = colliding_pair(CIDR)
    start = hash_address(first)
    both = allocate([first, second], CIDR, keep={second: start})
    assert both.addresses[second] == start and both.addresses[first] != start


def test_keep_is_ignored_outside_the_pool_or_when_taken():
    name = "ratings.bookinfo.global"
    fresh = allocate([name], CIDR).addresses[name]
    # vipCidr changed: the old address is not in the new pool.
    assert allocate([name], CIDR, keep={name: "240.0.3.4"}).addresses[name] == fresh
    # Not an address at all, or the pool's own network / broadcast address.
    for bad in ("garbage", "10.0.0.0", "10.0.0.255"):
        assert allocate([name], CIDR, keep={name: bad}).addresses[name] == fresh
    # Taken by an explicit address.
    assert allocate([name, "own.bookinfo.global"], CIDR, keep={name: "10.0.0.9"},
                    explicit={"own.bookinfo.global": "10.0.0.9"}).addresses[name] == fresh
    # Two names kept at one address: the first by name keeps it, the other gets a fresh one.
    one, two = "a.bookinfo.global", "b.bookinfo.global"
    shared = allocate([one, two], CIDR, keep={one: "10.0.0.9", two: "10.0.0.9"})
    assert shared.addresses[one] == "10.0.0.9" and shared.addresses[two] != "10.0.0.9"


def test_addresses_of_gone_names_in_keep_are_not_reused():
    newcomer = "new.bookinfo.global"
    start = hash_address(newcomer)
    assignment = allocate([newcomer], CIDR, keep={"gone.bookinfo.global": start})
    assert assignment.addresses[newcomer] != start
    assert assignment.addresses == {newcomer: Pool(CIDR).at((Pool(CIDR).start(newcomer) + 1) % Pool(CIDR).size)}
    assert "gone.bookinfo.global" not in assignment.addresses


def test_held_addresses_are_never_given_to_a_new_name():
    newcomer = "new.bookinfo.global"
    pool = Pool("10.0.0.0/28")
    start = hash_address(newcomer, "10.0.0.0/28")
    assert allocate([newcomer], "10.0.0.0/28", held={start}).addresses[newcomer] != start
    # Everything held but one address: that one.
    free = pool.at((pool.start(newcomer) + 5) % pool.size)
    held = {pool.at(i) for i in range(pool.size)} - {free}
    assert allocate([newcomer], "10.0.0.0/28", held=held).addresses == {newcomer: free}
    # Everything held: no address, and the name is reported.
    full = allocate([newcomer], "10.0.0.0/28", held=held | {free})
    assert full.addresses == {} and full.unassigned == (newcomer,)
    # A name keeps its own address even when some other cluster holds it too (held is about others).
    assert allocate([newcomer], "10.0.0.0/28", keep={newcomer: free}, held={free}).addresses == {newcomer: free}


def test_prefer_comes_after_keep_and_never_steals_a_kept_address():
    name, other = "ratings.bookinfo.global", "reviews.bookinfo.global"
    # A name new here takes what the other clusters answer for it, even though they hold it.
    assert allocate([name], CIDR, prefer={name: "10.0.0.77"}, held={"10.0.0.77"}).addresses == {name: "10.0.0.77"}
    # keep first.
    assert allocate([name], CIDR, keep={name: "10.0.0.5"}, prefer={name: "10.0.0.77"}).addresses == \
        {name: "10.0.0.5"}
    # keep invalid (old pool): prefer next.
    assert allocate([name], CIDR, keep={name: "240.0.0.5"}, prefer={name: "10.0.0.77"}).addresses == \
        {name: "10.0.0.77"}
    # Another name keeps that address: prefer is passed over, the name gets a fresh one.
    stolen = allocate([name, other], CIDR, keep={other: "10.0.0.77"}, prefer={name: "10.0.0.77"})
    assert stolen.addresses == {other: "10.0.0.77", name: hash_address(name)}
    # ... also when that other name is gone (its address is held until every cluster lets it go).
    gone = allocate([name], CIDR, keep={other: "10.0.0.77"}, prefer={name: "10.0.0.77"})
    assert gone.addresses[name] != "10.0.0.77"
    # A preferred address outside the pool, or an explicit one, is not taken.
    assert allocate([name], CIDR, prefer={name: "240.0.0.5"}).addresses == {name: hash_address(name)}
    assert allocate([name, other], CIDR, prefer={name: "10.0.0.77"}, explicit={other: "10.0.0.77"}).addresses == \
        {name: hash_address(name), other: "10.0.0.77"}
    # Two names preferring one address: the first by name gets it.
    both = allocate([other, name], CIDR, prefer={name: "10.0.0.77", other: "10.0.0.77"})
    assert both.addresses[name] == "10.0.0.77" and both.addresses[other] != "10.0.0.77"


def test_exhaustion_lists_the_names_left_out_deterministically():
    wanted = names(9)
    assignment = allocate(wanted, "10.0.0.0/29")  # 6 usable addresses
    assert len(assignment.addresses) == 6
    assert assignment.unassigned == tuple(sorted(wanted)[6:])
    assert_sound(assignment, "10.0.0.0/29", wanted)
    for seed in range(3):
        shuffled = list(wanted)
        random.Random(seed).shuffle(shuffled)
        assert allocate(shuffled, "10.0.0.0/29") == assignment
    # Kept names are never the ones left out: newcomers are.
    keep = {name: f"10.0.0.{i + 1}" for i, name in enumerate(sorted(wanted)[3:])}
    kept = allocate(wanted, "10.0.0.0/29", keep=keep)
    assert {n: kept.addresses[n] for n in keep} == keep
    assert kept.unassigned == tuple(sorted(wanted)[:3])


def test_a_slash_30_has_two_addresses():
    wanted = names(3)
    assignment = allocate(wanted, "192.0.2.8/30")
    assert sorted(assignment.addresses.values()) == ["192.0.2.10", "192.0.2.9"]
    assert len(assignment.unassigned) == 1
    # /31 and /32 have no network or broadcast address to skip.
    assert sorted(allocate(wanted, "192.0.2.8/31").addresses.values()) == ["192.0.2.8", "192.0.2.9"]
    assert list(allocate(wanted, "192.0.2.8/32").addresses.values()) == ["192.0.2.8"]


def test_an_ipv6_pool_uses_every_address():
    cidr = "fd00:10::/120"
    wanted = names(256)
    assignment = allocate(wanted, cidr)
    assert assignment.unassigned == ()
    addresses = {ipaddress.ip_address(a) for a in assignment.addresses.values()}
    assert addresses == set(ipaddress.ip_network(cidr))  # fd00:10:: and fd00:10::ff included
    assert all(a == str(ipaddress.ip_address(a)) for a in assignment.addresses.values())  # canonical text
    assert allocate(names(257), cidr).unassigned == (sorted(names(257))[-1],)
    kept = allocate(wanted[:3], cidr, keep={wanted[0]: "fd00:10::42"})
    assert kept.addresses[wanted[0]] == "fd00:10::42"
    assert allocate(wanted[:1], cidr, keep={wanted[0]: "10.0.0.1"}).addresses[wanted[0]] in Pool(cidr)


def test_again_without_history_is_a_fresh_allocation():
    wanted = names(10) + ["own.bookinfo.global"]
    explicit = {"own.bookinfo.global": "192.0.2.1"}
    fresh = allocate(wanted, CIDR, explicit=explicit)
    assert fresh.again(CIDR) == fresh
    assert allocate(wanted, "10.9.0.0/24", explicit=explicit) == fresh.again("10.9.0.0/24")
    # Names that found no room are allocated again too: a wider pool places them.
    tight = allocate(wanted, "10.0.0.0/29", explicit=explicit)
    assert len(tight.unassigned) == 4
    assert tight.again(CIDR) == fresh
    # With a history, it is allocate's answer for it.
    keep = {wanted[0]: "10.0.0.3"}
    assert fresh.again(CIDR, keep=keep, held={"10.0.0.4"}) == \
        allocate(wanted, CIDR, explicit=explicit, keep=keep, held={"10.0.0.4"})


def test_under_suffix_and_explicit_address():
    assert under_suffix("ratings.bookinfo.global", "global")
    assert under_suffix("Ratings.Bookinfo.GLOBAL", ".global.")
    assert not under_suffix("*.bookinfo.global", "global")
    assert not under_suffix("global", "global")
    assert not under_suffix("ratings.bookinfo.notglobal", "global")
    assert not under_suffix("ratings.bookinfo.svc.cluster.local", "global")
    assert explicit_address(["10.8.0.0/24", "240.0.0.7/32", "240.0.0.8"]) == "240.0.0.7"
    assert explicit_address(["10.8.0.0/24", "bogus"]) is None
    assert explicit_address(["fd00::1/128"]) == "fd00::1"
    assert explicit_address([]) is None


# --- history: keep fed back ----------------------------------------------------------------------------

CANDIDATES = [f"n{i:02d}.ns{i % 3}.global" for i in range(40)]
SMALL = "10.1.0.0/27"  # 30 addresses


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sets(st.sampled_from(CANDIDATES), max_size=20), min_size=1, max_size=12))
def test_a_name_never_moves_while_it_stays(steps):
    pool = Pool(SMALL)
    previous = Assignment()
    for step in steps:
        current = allocate(step, SMALL, keep=previous.addresses)
        assert_sound(current, SMALL, step)
        for name in step & set(previous.addresses):
            assert current.addresses.get(name) == previous.addresses[name], name
        # An address let go in this step is not given to another name yet.
        for name, address in current.addresses.items():
            if name not in previous.addresses:
                assert address not in previous.addresses.values()
        if current.unassigned:  # only when the pool is really full
            assert set(current.addresses.values()) | set(previous.addresses.values()) == \
                {pool.at(i) for i in range(pool.size)}
        previous = current


# --- the model and the compiler --------------------------------------------------------------------

RATINGS, DB = "ratings.bookinfo.global", "db.bookinfo.global"

SERVICES = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.SUFFIX]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1, labels: {topology.istio.io/cluster: cluster-a}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: bookinfo}
spec:
  hosts: [db.bookinfo.SUFFIX]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.2, labels: {topology.istio.io/cluster: cluster-a}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pg, namespace: bookinfo}
spec:
  hosts: [pg.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.1.0.3, labels: {topology.istio.io/cluster: cluster-a}}]
"""


def mesh_files(suffix: str = "global", mesh_config: str = "", extra: str = "") -> dict[str, str]:
    return {"mesh.yaml": ONE_CLUSTER + mesh_config + SERVICES.replace("SUFFIX", suffix) + extra}


def compiled(mesh):
    config = compile_view(mesh, make_view(mesh, "cluster-a",
                                          "sidecar~10.1.0.9~client.bookinfo~bookinfo.svc.cluster.local"))
    assert config_dump(config)  # the whole view serializes
    return config


def vhost_domains(config, host: str, port: int = 9080) -> list[str]:
    route = config.messages(ROUTE)[str(port)]
    return next(list(v.domains) for v in route.virtual_hosts if v.name == f"{host}:{port}")


def tcp_prefixes(config, port: int = 5432) -> dict[str, list[str]]:
    """The listener's filter chains by name, each with its destination prefixes."""
    listener = config.messages(LISTENER)[f"0.0.0.0_{port}"]
    return {chain.name: [f"{r.address_prefix}/{r.prefix_len.value}" for r in chain.filter_chain_match.prefix_ranges]
            for chain in listener.filter_chains}


def assert_compiled_at(config, vips: dict[str, str], ratings: str = RATINGS, db: str = DB) -> None:
    assert vhost_domains(config, ratings) == [ratings, f"{ratings}:9080", vips[ratings], f"{vips[ratings]}:9080"]
    assert tcp_prefixes(config)[f"outbound|5432||{db}"] == [f"{vips[db]}/32"]


def test_global_hosts_get_vips_that_listeners_and_routes_use():
    mesh = mesh_from(mesh_files())
    assert set(mesh.vips.addresses) == {RATINGS, DB}
    assert mesh.vips.unassigned == () and mesh.vips.explicit == frozenset()
    assert mesh.vips == allocate([RATINGS, DB], DEFAULT_CIDR)
    for name, address in mesh.vips.addresses.items():
        assert ipaddress.ip_address(address) in ipaddress.ip_network("240.0.0.0/16")
        assert mesh.services[name].addresses == (address,)
    assert mesh.services["pg.bookinfo.svc.cluster.local"].addresses == ()
    assert_compiled_at(compiled(mesh), mesh.vips.addresses)


def test_mesh_config_sets_the_suffix_and_the_pool():
    config = ("---\napiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
              "spec: {dnsSuffix: mesh, vipCidr: 10.250.0.0/24}\n")
    mesh = mesh_from(mesh_files("mesh", config, extra="---\n" + SERVICES.split("---\n")[1].replace("SUFFIX", "global")
                                .replace("name: ratings", "name: ratings-global")))
    ratings, db = "ratings.bookinfo.mesh", "db.bookinfo.mesh"
    assert (mesh.settings.dns_suffix, mesh.settings.vip_cidr) == ("mesh", "10.250.0.0/24")
    assert set(mesh.vips.addresses) == {ratings, db}  # ratings.bookinfo.global is not under "mesh"
    assert mesh.services[RATINGS].addresses == ()
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.250.0.0/24") for a in mesh.vips.addresses.values())
    assert mesh.vips == allocate([ratings, db], "10.250.0.0/24")
    assert_compiled_at(compiled(mesh), mesh.vips.addresses, ratings, db)
    assert vhost_domains(compiled(mesh), RATINGS) == [RATINGS, f"{RATINGS}:9080"]


def test_a_service_with_its_own_address_keeps_exactly_it():
    own = SERVICES.replace("  hosts: [db.bookinfo.SUFFIX]\n",
                           "  hosts: [db.bookinfo.SUFFIX]\n  addresses: [240.0.1.1]\n")
    mesh = mesh_from({"mesh.yaml": ONE_CLUSTER + own.replace("SUFFIX", "global")})
    assert mesh.services[DB].addresses == ("240.0.1.1",)
    assert mesh.vips.addresses[DB] == "240.0.1.1" and mesh.vips.explicit == {DB}
    assert tcp_prefixes(compiled(mesh))[f"outbound|5432||{DB}"] == ["240.0.1.1/32"]
    # Another name whose hash starts there is sent on: the address is the ServiceEntry's.
    assert mesh.vips.addresses[RATINGS] != "240.0.1.1"
    # A range is no address DNS can answer: the name gets a VIP as well, after its range.
    ranged = mesh_from({"mesh.yaml": ONE_CLUSTER + own.replace("SUFFIX", "global").replace("240.0.1.1]",
                                                                                          "10.8.0.0/24]")})
    vip = ranged.vips.addresses[DB]
    assert ranged.services[DB].addresses == ("10.8.0.0/24", vip) and DB not in ranged.vips.explicit
    assert tcp_prefixes(compiled(ranged))[f"outbound|5432||{DB}"] == ["10.8.0.0/24", f"{vip}/32"]


def test_keep_vips_moves_the_compiled_vip():
    result = load(snapshot_of(mesh_files()))
    assert result.valid
    fresh = build_mesh(result.objects, "r1")
    keep = {RATINGS: "240.0.7.7", DB: "240.0.7.8"}
    kept = build_mesh(result.objects, "r2", keep_vips=keep)
    assert kept.vips.addresses == keep
    assert kept.services[RATINGS].addresses == ("240.0.7.7",)
    config = compiled(kept)
    assert_compiled_at(config, keep)
    assert fresh.vips.addresses[RATINGS] not in vhost_domains(config, RATINGS)
    # Held addresses are skipped by new names; the objects' own services are untouched by either build.
    held = build_mesh(result.objects, "r3", held_vips={fresh.vips.addresses[RATINGS]})
    assert held.vips.addresses[RATINGS] != fresh.vips.addresses[RATINGS]
    assert build_mesh(result.objects, "r4").vips == fresh.vips
    assert fresh.services[RATINGS].addresses == (fresh.vips.addresses[RATINGS],)


def test_hosts_not_under_the_suffix_and_wildcards_get_no_vip():
    extra = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: bookinfo}
spec:
  hosts: ['*.bookinfo.global', api.example.com, ratings.global.example.com]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 8443, name: tls, protocol: TLS}]
"""
    mesh = mesh_from(mesh_files(extra=extra))
    assert set(mesh.vips.addresses) == {RATINGS, DB}
    for host in ("*.bookinfo.global", "api.example.com", "ratings.global.example.com", "pg.bookinfo.svc.cluster.local"):
        assert mesh.services[host].addresses == ()


# --- validation -----------------------------------------------------------------------------------


def se(name: str, hosts: str, addresses: str = "") -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  hosts: {hosts}\n"
            + (f"  addresses: {addresses}\n" if addresses else "")
            + "  location: MESH_INTERNAL\n  resolution: NONE\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n")


def mesh_config(cidr: str) -> str:
    return (f"---\napiVersion: galleon.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\n"
            f"spec: {{vipCidr: '{cidr}'}}\n")


def test_duplicate_vip_message_names_both_names_and_the_fix():
    findings = check(se("a", "[ratings.bookinfo.global]", "[240.0.0.7/32]")
                     + se("b", "[reviews.bookinfo.global]", "[10.9.0.0/24, 240.0.0.7]"))
    [finding] = [f for f in findings if f.code == "GAL0118"]
    assert (finding.kind, finding.namespace, finding.name) == ("ServiceEntry", "bookinfo", "b")
    assert finding.message == (
        "reviews.bookinfo.global and ratings.bookinfo.global (ServiceEntry bookinfo/a) both claim 240.0.0.7, "
        "and DNS can answer one name per address; give each name its own address, or leave addresses out to "
        "have one allocated")


def test_hosts_differing_only_by_case_are_one_dns_name():
    findings = check(se("a", "[ratings.bookinfo.global]") + se("b", "[Ratings.Bookinfo.global]"))
    [finding] = [f for f in findings if f.code == "GAL0118"]
    assert finding.name == "b" and finding.message == (
        "Ratings.Bookinfo.global and ratings.bookinfo.global are one DNS name (DNS ignores case), so they cannot "
        "have an address each; spell them the same, in lower case")


def test_vip_pool_too_small_message_gives_the_count_and_the_fix():
    config = mesh_config("240.0.0.0/29")
    hosts = "[" + ", ".join(f"s{i}.bookinfo.global" for i in range(9)) + "]"
    findings = check(config + se("many", hosts) + se("own", "[own.bookinfo.global]", "[240.0.0.1]"))
    [finding] = [f for f in findings if f.code == "GAL0119"]
    assert finding.message == (
        "9 cross-cluster names need a VIP but vipCidr 240.0.0.0/29 has room for 5, so s5.bookinfo.global and "
        "3 more would get none; widen MeshConfig spec.vipCidr")
    # What the model does with the same names: exactly those four are left out.
    result = load(snapshot_of({"mesh.yaml": config + se("many", hosts) + se("own", "[own.bookinfo.global]",
                                                                                 "[240.0.0.1]")}))
    assert len(build_mesh(result.objects).vips.unassigned) == 4


@pytest.mark.parametrize("cidr", ["240.0.0.0/29", "fd00::/125"])
def test_a_pool_just_big_enough_is_not_too_small(cidr):
    size = Pool(cidr).size
    config = mesh_config(cidr)
    hosts = "[" + ", ".join(f"s{i}.bookinfo.global" for i in range(size)) + "]"
    assert not [f for f in check(config + se("many", hosts)) if f.code == "GAL0119"]
    result = load(snapshot_of({"mesh.yaml": config + se("many", hosts)}))
    assert result.valid and build_mesh(result.objects).vips.unassigned == ()

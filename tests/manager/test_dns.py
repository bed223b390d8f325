"""Name resolution: resolv.conf, the search rules, and RDATA as the laptop will copy it.

The search rules are tested against a scripted resolver (which names were asked, in which
order); the wire format of every record type is checked by parsing it back with dnspython,
an independent implementation; :class:`AresResolver` is checked against the sandbox's cluster
DNS server on loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pycares
import pytest

from manager import rdata
from manager.dns import (
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    Answer,
    AresResolver,
    ClusterDNS,
    Record,
)
from manager.resolv import ResolvConf
from sandbox.apiserver.store import Store
from sandbox.dns import StoreView
from sandbox.dns import serve as serve_dns

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(20)

POD_RESOLV_CONF = """\
# written by the kubelet
nameserver 10.96.0.10
search ambassador.svc.cluster.local svc.cluster.local cluster.local
options ndots:5 edns0
"""


def test_resolv_conf_of_a_pod() -> None:
    resolv = ResolvConf.parse(POD_RESOLV_CONF)
    assert resolv.nameservers == ("10.96.0.10",)
    assert resolv.search == ("ambassador.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert resolv.ndots == 5
    assert resolv.cluster_domain() == "cluster.local"


def test_resolv_conf_oddities(tmp_path: Path) -> None:
    resolv = ResolvConf.parse(
        "nameserver fe80::1%eth0\nnameserver bogus\nsearch a.example. b.example\n"
        "search corp.svc.k8s.internal\noptions ndots:99 ; comment\n"
    )
    assert resolv.nameservers == ("fe80::1",)
    assert resolv.search == ("corp.svc.k8s.internal",)  # the last search line wins
    assert resolv.ndots == 15
    assert resolv.cluster_domain() == "k8s.internal"
    assert ResolvConf.load(tmp_path / "missing") == ResolvConf()
    assert ResolvConf().cluster_domain() is None


@dataclass
class ScriptedResolver:
    """Answers from a table, and remembers the questions."""

    answers: dict[str, Answer]
    asked: list[str] = field(default_factory=list)

    async def query(self, name: str, rtype: int) -> Answer:
        self.asked.append(name)
        return self.answers.get(name, Answer(NXDOMAIN))


def a_record(name: str, ip: str) -> Record:
    return Record(name, rdata.A, 5, ipaddress.ip_address(ip).packed)


def cluster_dns(resolver: ScriptedResolver, allows: Any = lambda name: True) -> ClusterDNS:
    return ClusterDNS(resolver, ResolvConf.parse(POD_RESOLV_CONF), allows)


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        (
            "echo.",
            [
                "echo.ambassador.svc.cluster.local.",
                "echo.svc.cluster.local.",
                "echo.cluster.local.",
            ],
        ),
        (
            "echo.default.",
            [
                "echo.default.ambassador.svc.cluster.local.",
                "echo.default.svc.cluster.local.",
                "echo.default.cluster.local.",
                "echo.default.",
            ],
        ),
        ("echo.default.svc.cluster.local.", ["echo.default.svc.cluster.local."]),
        ("Echo.Default.SVC.cluster.local.", ["echo.default.svc.cluster.local."]),
        ("7.7.96.10.in-addr.arpa.", ["7.7.96.10.in-addr.arpa."]),
        (
            "a.b.c.d.e.example.com.",
            [
                "a.b.c.d.e.example.com.",
                "a.b.c.d.e.example.com.ambassador.svc.cluster.local.",
                "a.b.c.d.e.example.com.svc.cluster.local.",
                "a.b.c.d.e.example.com.cluster.local.",
            ],
        ),
    ],
)
def test_search_candidates(name: str, candidates: list[str]) -> None:
    assert cluster_dns(ScriptedResolver({})).candidates(name) == candidates


@pytest.mark.anyio
async def test_the_first_candidate_with_records_answers_for_the_asked_name() -> None:
    resolver = ScriptedResolver(
        {
            "echo.default.svc.cluster.local.": Answer(
                NOERROR, (a_record("echo.default.svc.cluster.local.", "10.96.7.7"),)
            )
        }
    )
    answer = await cluster_dns(resolver).lookup("echo.default.", rdata.A)
    assert answer == Answer(NOERROR, (a_record("echo.default.", "10.96.7.7"),))
    assert resolver.asked == [
        "echo.default.ambassador.svc.cluster.local.",
        "echo.default.svc.cluster.local.",
    ]


@pytest.mark.anyio
async def test_a_cname_chain_keeps_its_targets_names() -> None:
    cname = Record(
        "www.default.svc.cluster.local.", rdata.CNAME, 5, rdata.encode_name("web.example.")
    )
    resolver = ScriptedResolver(
        {
            "www.default.svc.cluster.local.": Answer(
                NOERROR, (cname, a_record("web.example.", "192.0.2.7"))
            )
        }
    )
    answer = await cluster_dns(resolver).lookup("www.default.", rdata.A)
    assert [(r.name, r.type) for r in answer.records] == [
        ("www.default.", rdata.CNAME),
        ("web.example.", rdata.A),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answers", "rcode"),
    [
        ({}, NXDOMAIN),
        ({"echo.default.svc.cluster.local.": Answer(NOERROR)}, NOERROR),  # NODATA
        ({"echo.default.cluster.local.": Answer(SERVFAIL)}, SERVFAIL),
        ({"echo.default.": Answer(REFUSED)}, NXDOMAIN),  # "not my zone" is no failure
    ],
)
async def test_what_answers_when_no_candidate_has_records(
    answers: dict[str, Answer], rcode: int
) -> None:
    answer = await cluster_dns(ScriptedResolver(answers)).lookup("echo.default.", rdata.A)
    assert answer == Answer(rcode)


@pytest.mark.anyio
async def test_the_scope_decides_which_candidates_are_asked() -> None:
    resolver = ScriptedResolver({})
    allowed = cluster_dns(resolver, lambda name: name.endswith(".svc.cluster.local."))
    await allowed.lookup("echo.default.", rdata.A)
    assert resolver.asked == [
        "echo.default.ambassador.svc.cluster.local.",
        "echo.default.svc.cluster.local.",
    ]
    nothing = cluster_dns(resolver, lambda name: False)
    assert await nothing.lookup("echo.default.", rdata.A) == Answer(REFUSED)


@pytest.mark.anyio
async def test_addresses_of_a_name_for_the_data_plane() -> None:
    resolver = ScriptedResolver(
        {
            "echo.default.svc.cluster.local.": Answer(
                NOERROR, (a_record("echo.default.svc.cluster.local.", "10.96.7.7"),)
            )
        }
    )
    addresses = await cluster_dns(resolver).addresses("echo.default")
    assert addresses == [ipaddress.ip_address("10.96.7.7")]


def parse(rtype: int, wire: bytes) -> dns.rdata.Rdata:
    """dnspython's reading of the RDATA: it fails on anything malformed or compressed."""
    return dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.RdataType(rtype), wire, 0, len(wire)
    )


@pytest.mark.parametrize(
    ("rtype", "data", "text"),
    [
        (rdata.A, pycares.ARecordData("10.96.0.10"), "10.96.0.10"),
        (rdata.AAAA, pycares.AAAARecordData("fd00::a"), "fd00::a"),
        (rdata.CNAME, pycares.CNAMERecordData("web.example"), "web.example."),
        (rdata.NS, pycares.NSRecordData("ns.example"), "ns.example."),
        (
            rdata.PTR,
            pycares.PTRRecordData("echo.default.svc.cluster.local"),
            "echo.default.svc.cluster.local.",
        ),
        (rdata.MX, pycares.MXRecordData(10, "mail.example"), "10 mail.example."),
        (
            rdata.SOA,
            pycares.SOARecordData(
                "ns.dns.cluster.local", "hostmaster.cluster.local", 7, 7200, 1800, 86400, 5
            ),
            "ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5",
        ),
        (
            rdata.SRV,
            pycares.SRVRecordData(0, 100, 80, "echo.default.svc.cluster.local"),
            "0 100 80 echo.default.svc.cluster.local.",
        ),
        (rdata.TXT, pycares.TXTRecordData(b"v=spf1 -all"), '"v=spf1 -all"'),
        (rdata.TXT, pycares.TXTRecordData(b""), '""'),
        (
            rdata.CAA,
            pycares.CAARecordData(0, "issue", "letsencrypt.org"),
            '0 issue "letsencrypt.org"',
        ),
        (
            rdata.NAPTR,
            pycares.NAPTRRecordData(100, 10, "S", "SIP+D2U", "", "_sip._udp.example"),
            '100 10 "S" "SIP+D2U" "" _sip._udp.example.',
        ),
        (rdata.TLSA, pycares.TLSARecordData(3, 1, 0, bytes.fromhex("abcd")), "3 1 0 abcd"),
        (
            rdata.URI,
            pycares.URIRecordData(10, 1, "https://example.com/"),
            '10 1 "https://example.com/"',
        ),
        (rdata.HTTPS, pycares.HTTPSRecordData(1, "", [(1, b"\x02h2")]), '1 . alpn="h2"'),
    ],
)
def test_rdata_in_wire_format(rtype: int, data: Any, text: str) -> None:
    assert parse(rtype, rdata.encode(rtype, data)).to_text() == text


def test_long_txt_records_are_split_into_strings() -> None:
    wire = rdata.encode(rdata.TXT, pycares.TXTRecordData(b"x" * 600))
    parsed = parse(rdata.TXT, wire)
    assert b"".join(parsed.strings) == b"x" * 600  # type: ignore[attr-defined]


def test_names_with_escapes() -> None:
    assert rdata.encode_name("a\\.b.example.") == b"\x03a.b\x07example\x00"
    assert rdata.encode_name("\\065.example") == b"\x01A\x07example\x00"
    assert rdata.encode_name(".") == b"\x00"
    with pytest.raises(rdata.UnsupportedRecord):
        rdata.encode_name("x" * 64 + ".example.")
    with pytest.raises(rdata.UnsupportedRecord):
        rdata.encode(99, object())


@pytest.mark.anyio
async def test_ares_resolver_against_the_cluster_dns() -> None:
    store = Store()
    store.create(
        ("", "services"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default", "resourceVersion": "1"},
            "spec": {
                "clusterIP": "10.96.0.20",
                "clusterIPs": ["10.96.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        },
    )
    async with anyio.create_task_group() as tasks:
        port: int = await tasks.start(
            lambda task_status: serve_dns(StoreView(store), "127.0.0.1", 0, task_status=task_status)
        )
        resolver = AresResolver([f"127.0.0.1:{port}"])
        try:
            found = await resolver.query("echo.default.svc.cluster.local.", rdata.A)
            assert found == Answer(
                NOERROR, (a_record("echo.default.svc.cluster.local.", "10.96.0.20"),)
            )
            assert await resolver.query("nope.default.svc.cluster.local.", rdata.A) == Answer(
                NXDOMAIN
            )
            assert await resolver.query("echo.default.svc.cluster.local.", rdata.AAAA) == Answer(
                NOERROR
            )
            assert await resolver.query("example.com.", rdata.A) == Answer(REFUSED)
            assert (
                await resolver.query("echo.default.svc.cluster.local.", 99)
            ).rcode == 4  # NOTIMP
        finally:
            await resolver.aclose()
        tasks.cancel_scope.cancel()

"""/v2/ip_connections and /v2/ips through the official `telnyx` SDK: an IP connection with two
IP addresses made by `client.ips.create(connection_id=..., ip_address=...)`, listed with
`client.ips.list(filter={"connection_id": ...})` (page[size]=1, every page), retrieved,
moved, updated and deleted; the platform-assigned tech prefix and the default IP fields. The
shared connection walk is in test_connections.py."""

from __future__ import annotations

import uuid

import pytest
import telnyx
from telnyx.types import (
    IP,
    IPConnection,
    IPConnectionCreateResponse,
    IPCreateResponse,
    IPDeleteResponse,
    IPRetrieveResponse,
    IPUpdateResponse,
)

from helpers import strict


def ip_connection(client: telnyx.Telnyx, name: str, **fields) -> IPConnection:
    raw = client.ip_connections.with_raw_response.create(connection_name=name, **fields)
    assert raw.status_code == 201, raw.text()
    strict(IPConnectionCreateResponse, raw.json())
    return raw.parse().data


def test_ip_connection_with_two_ips(client: telnyx.Telnyx, unique: str):
    conn = ip_connection(
        client,
        f"{unique} Asterisk PBX",
        transport_protocol="UDP",
        inbound={"sip_region": "US", "ani_number_format": "+E.164", "dnis_number_format": "+e164"},
    )
    assert conn.record_type == "ip_connection"
    assert conn.outbound is not None
    assert conn.outbound.tech_prefix and len(conn.outbound.tech_prefix) == 4 and conn.outbound.tech_prefix.isdigit()
    assert conn.outbound.ip_authentication_method == "tech-prefixp-charge-info"
    assert conn.transport_protocol == "UDP"
    assert conn.default_on_hold_comfort_noise_enabled is True

    raw = client.ips.with_raw_response.create(connection_id=conn.id, ip_address="203.0.113.10")
    assert raw.status_code == 201, raw.text()
    assert raw.http_request.url.path.endswith("/v2/ips")
    strict(IPCreateResponse, raw.json())
    first = raw.parse().data
    assert isinstance(first, IP)
    assert first.id and first.record_type == "ip"
    assert first.connection_id == conn.id
    assert first.ip_address == "203.0.113.10"
    assert first.port == 5060, "the contract's default port"
    assert first.created_at and first.created_at.endswith("Z") and first.updated_at == first.created_at

    second = client.ips.create(connection_id=conn.id, ip_address="2001:db8:0::20", port=5080).data
    assert second.ip_address == "2001:db8::20", "kept in canonical form"
    assert second.port == 5080

    # Listed by connection, page size 1, every page.
    mine = {"connection_id": conn.id}
    listed = client.ips.with_raw_response.list(filter=mine, page_size=1)
    assert listed.status_code == 200, listed.text()
    assert listed.http_request.url.params["filter[connection_id]"] == conn.id
    for item in listed.json()["data"]:
        strict(IP, item)
    page = listed.parse()
    assert page.meta.total_pages == 2 and page.meta.total_results == 2
    assert [ip.id for ip in client.ips.list(filter=mine, page_size=1)] == [first.id, second.id], "oldest first"
    explicit = [ip.id for n in (1, 2) for ip in client.ips.list(filter=mine, page_size=1, page_number=n).data]
    assert explicit == [first.id, second.id]
    assert client.ips.list(filter=mine, page_size=1, page_number=3).data == []
    assert [ip.id for ip in client.ips.list(filter={"connection_id": conn.id, "ip_address": "2001:db8::20"})] == [second.id]
    assert [ip.id for ip in client.ips.list(filter={"connection_id": conn.id, "port": 5080})] == [second.id]

    got = client.ips.with_raw_response.retrieve(first.id)
    assert got.status_code == 200, got.text()
    strict(IPRetrieveResponse, got.json())
    assert got.parse().data.to_dict() == first.to_dict()

    # The connection may name its IPs as defaults (update only, as in the contract).
    u = client.ip_connections.update(conn.id, inbound={"default_primary_ip_id": first.id, "default_secondary_ip_id": second.id}).data
    assert u.inbound.default_primary_ip_id == first.id and u.inbound.default_secondary_ip_id == second.id
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.ip_connections.update(conn.id, inbound={"default_tertiary_ip_id": "1234567890123456789"})

    # Update an IP (ip_address is required on PATCH too, per UpdateIpRequest).
    raw = client.ips.with_raw_response.update(first.id, ip_address="203.0.113.11", port=5062)
    assert raw.status_code == 200, raw.text()
    strict(IPUpdateResponse, raw.json())
    moved = raw.parse().data
    assert (moved.ip_address, moved.port, moved.connection_id) == ("203.0.113.11", 5062, conn.id)
    assert moved.created_at == first.created_at

    # Delete an IP: the default that named it is cleared, the IP is gone.
    raw = client.ips.with_raw_response.delete(second.id)
    assert raw.status_code == 200, raw.text()
    strict(IPDeleteResponse, raw.json())
    assert raw.parse().data.id == second.id
    with pytest.raises(telnyx.NotFoundError):
        client.ips.retrieve(second.id)
    with pytest.raises(telnyx.NotFoundError):
        client.ips.update(second.id, ip_address="203.0.113.12")
    with pytest.raises(telnyx.NotFoundError):
        client.ips.delete(second.id)
    assert client.ip_connections.retrieve(conn.id).data.inbound.default_secondary_ip_id is None
    assert [ip.id for ip in client.ips.list(filter=mine)] == [first.id]

    # Deleting the connection deletes its IPs.
    client.ip_connections.delete(conn.id)
    with pytest.raises(telnyx.NotFoundError):
        client.ips.retrieve(first.id)
    assert client.ips.list(filter=mine).data == []


def test_ips_are_refused_for_bad_values(client: telnyx.Telnyx, unique: str):
    conn = ip_connection(client, f"{unique} refusals")
    for bad in ("not-an-ip", "0.0.0.0", "224.0.0.1", "203.0.113.0/24"):
        with pytest.raises(telnyx.UnprocessableEntityError) as e:
            client.ips.create(connection_id=conn.id, ip_address=bad)
        assert "/ip_address" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}, (bad, e.value.body)
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.ips.create(connection_id="1234567890123456789", ip_address="198.51.100.7")
    assert "/connection_id" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.ips.create(connection_id=conn.id, ip_address="198.51.100.7", port=70000)
    client.ips.create(connection_id=conn.id, ip_address="198.51.100.7")
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.ips.create(connection_id=conn.id, ip_address="198.51.100.7")
    assert e.value.body["errors"][0]["code"] == "10007"


def test_two_connections_share_an_address_by_tech_prefix(client: telnyx.Telnyx, unique: str):
    a = ip_connection(client, f"{unique} site A")
    b = ip_connection(client, f"{unique} site B")
    assert a.outbound.tech_prefix != b.outbound.tech_prefix
    addr = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
    ia = client.ips.create(connection_id=a.id, ip_address=addr).data
    ib = client.ips.create(connection_id=b.id, ip_address=addr).data
    assert ia.connection_id == a.id and ib.connection_id == b.id
    # A PATCH may move an IP to another IP connection of the same account.
    c = ip_connection(client, f"{unique} site C")
    moved = client.ips.update(ia.id, ip_address=addr, connection_id=c.id).data
    assert moved.connection_id == c.id
    assert [ip.id for ip in client.ips.list(filter={"connection_id": c.id})] == [ia.id]
    assert client.ips.list(filter={"connection_id": a.id}).data == []
    # Not to a connection of another type.
    cred = client.credential_connections.create(
        connection_name=f"{unique} cred", user_name="u" + uuid.uuid4().hex[:15], password="password-1234"
    ).data
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.ips.update(ia.id, ip_address=addr, connection_id=cred.id)


def test_ip_authentication_token(client: telnyx.Telnyx, unique: str):
    token = "tok-" + uuid.uuid4().hex[:20]
    conn = ip_connection(client, f"{unique} token", outbound={"ip_authentication_method": "token", "ip_authentication_token": token})
    assert conn.outbound.ip_authentication_method == "token" and conn.outbound.ip_authentication_token == token
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        ip_connection(client, f"{unique} token 2", outbound={"ip_authentication_method": "token", "ip_authentication_token": token})
    assert "/outbound/ip_authentication_token" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.ip_connections.update(conn.id, outbound={"tech_prefix": "0000" if conn.outbound.tech_prefix != "0000" else "0001"})
    same = client.ip_connections.update(conn.id, outbound={"tech_prefix": conn.outbound.tech_prefix}).data
    assert same.outbound.tech_prefix == conn.outbound.tech_prefix

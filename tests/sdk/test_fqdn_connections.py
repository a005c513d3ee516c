"""/v2/fqdn_connections and /v2/fqdns through the official `telnyx` SDK: an FQDN connection
with an FQDN record made by `client.fqdns.create(...)`, listed by connection (page[size]=1,
every page), found by the connection list's `filter={"fqdn": ...}`, set as the connection's
default, updated and deleted. The shared connection walk is in test_connections.py."""

from __future__ import annotations

import uuid

import pytest
import telnyx
from telnyx.types import (
    Fqdn,
    FqdnConnection,
    FqdnConnectionCreateResponse,
    FqdnCreateResponse,
    FqdnDeleteResponse,
    FqdnRetrieveResponse,
    FqdnUpdateResponse,
)

from helpers import strict


def fqdn_connection(client: telnyx.Telnyx, name: str, **fields) -> FqdnConnection:
    raw = client.fqdn_connections.with_raw_response.create(connection_name=name, **fields)
    assert raw.status_code == 201, raw.text()
    strict(FqdnConnectionCreateResponse, raw.json())
    return raw.parse().data


def host(unique: str, name: str = "pbx") -> str:
    return f"{name}.{unique}.example.com"


def test_fqdn_connection_with_an_fqdn(client: telnyx.Telnyx, unique: str):
    conn = fqdn_connection(
        client,
        f"{unique} Office SBC",
        transport_protocol="TLS",
        inbound={"sip_region": "Europe", "default_routing_method": "round-robin"},
        outbound={"ani_override": "+442071838750", "ip_authentication_method": "ip-authentication"},
    )
    assert conn.record_type == "fqdn_connection"
    assert conn.transport_protocol == "TLS"
    assert conn.inbound.sip_region == "Europe" and conn.inbound.default_routing_method == "round-robin"
    assert conn.inbound.default_primary_fqdn_id is None
    assert conn.outbound.ani_override == "+442071838750"
    assert conn.microsoft_teams_sbc is False

    name = host(unique)
    raw = client.fqdns.with_raw_response.create(connection_id=conn.id, fqdn=name, dns_record_type="a", port=5061)
    assert raw.status_code == 201, raw.text()
    assert raw.http_request.url.path.endswith("/v2/fqdns")
    strict(FqdnCreateResponse, raw.json())
    rec = raw.parse().data
    assert isinstance(rec, Fqdn)
    assert rec.id and rec.record_type == "fqdn"
    assert (rec.connection_id, rec.fqdn, rec.dns_record_type, rec.port) == (conn.id, name, "a", 5061)
    assert rec.created_at and rec.updated_at == rec.created_at

    srv = client.fqdns.create(connection_id=conn.id, fqdn=f"{unique}.example.com", dns_record_type="srv").data
    assert srv.dns_record_type == "srv" and srv.port is None, "SRV records give the port"
    plain = client.fqdns.create(connection_id=conn.id, fqdn=host(unique, "backup"), dns_record_type="a").data
    assert plain.port == 5060, "an A record defaults to 5060"

    got = client.fqdns.with_raw_response.retrieve(rec.id)
    assert got.status_code == 200, got.text()
    strict(FqdnRetrieveResponse, got.json())
    assert got.parse().data.to_dict() == rec.to_dict()

    # Listed by connection, page size 1, every page; and by the other filters.
    mine = {"connection_id": conn.id}
    listed = client.fqdns.with_raw_response.list(filter=mine, page_size=1)
    assert listed.status_code == 200, listed.text()
    for item in listed.json()["data"]:
        strict(Fqdn, item)
    assert listed.parse().meta.total_pages == 3
    ids = [rec.id, srv.id, plain.id]
    assert [f.id for f in client.fqdns.list(filter=mine, page_size=1)] == ids, "oldest first"
    assert [f.id for n in (1, 2, 3) for f in client.fqdns.list(filter=mine, page_size=1, page_number=n).data] == ids
    assert [f.id for f in client.fqdns.list(filter={"fqdn": name})] == [rec.id]
    assert [f.id for f in client.fqdns.list(filter={"connection_id": conn.id, "dns_record_type": "srv"})] == [srv.id]
    assert [f.id for f in client.fqdns.list(filter={"connection_id": conn.id, "port": 5061})] == [rec.id]

    # The connection list finds the connection by its FQDN.
    by_fqdn = client.fqdn_connections.list(filter={"fqdn": name})
    assert [c.id for c in by_fqdn] == [conn.id]
    assert [c.id for c in client.connections.list(filter={"fqdn": name})] == [conn.id]

    # The connection may name its records as defaults.
    u = client.fqdn_connections.update(conn.id, inbound={"default_primary_fqdn_id": rec.id, "default_secondary_fqdn_id": plain.id}).data
    assert (u.inbound.default_primary_fqdn_id, u.inbound.default_secondary_fqdn_id) == (rec.id, plain.id)
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.fqdn_connections.update(conn.id, inbound={"default_tertiary_fqdn_id": "1234567890123456789"})

    # Update a record.
    raw = client.fqdns.with_raw_response.update(rec.id, fqdn=host(unique, "pbx2"), port=5070)
    assert raw.status_code == 200, raw.text()
    strict(FqdnUpdateResponse, raw.json())
    changed = raw.parse().data
    assert (changed.fqdn, changed.port, changed.dns_record_type) == (host(unique, "pbx2"), 5070, "a")
    assert client.fqdn_connections.list(filter={"fqdn": name}).data == []

    # Delete a record: the default naming it is cleared.
    raw = client.fqdns.with_raw_response.delete(plain.id)
    assert raw.status_code == 200, raw.text()
    strict(FqdnDeleteResponse, raw.json())
    assert raw.parse().data.id == plain.id
    with pytest.raises(telnyx.NotFoundError):
        client.fqdns.retrieve(plain.id)
    with pytest.raises(telnyx.NotFoundError):
        client.fqdns.update(plain.id, port=5090)
    with pytest.raises(telnyx.NotFoundError):
        client.fqdns.delete(plain.id)
    assert client.fqdn_connections.retrieve(conn.id).data.inbound.default_secondary_fqdn_id is None

    # Deleting the connection deletes its records.
    client.fqdn_connections.delete(conn.id)
    for f in (rec, srv):
        with pytest.raises(telnyx.NotFoundError):
            client.fqdns.retrieve(f.id)
    assert client.fqdns.list(filter=mine).data == []


def test_fqdns_are_refused_for_bad_values(client: telnyx.Telnyx, unique: str):
    conn = fqdn_connection(client, f"{unique} refusals")
    for bad in ("localhost", "192.0.2.10", "bad_name.example.com", "-x.example.com"):
        with pytest.raises(telnyx.UnprocessableEntityError) as e:
            client.fqdns.create(connection_id=conn.id, fqdn=bad, dns_record_type="a")
        assert "/fqdn" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}, (bad, e.value.body)
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.fqdns.create(connection_id=conn.id, fqdn=host(unique), dns_record_type="cname")
    assert e.value.body["errors"][0]["code"] == "10032"
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.fqdns.create(connection_id=conn.id, fqdn=host(unique), dns_record_type="srv", port=5060)
    assert "/port" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.fqdns.create(connection_id="1234567890123456789", fqdn=host(unique), dns_record_type="a")
    client.fqdns.create(connection_id=conn.id, fqdn=host(unique), dns_record_type="a")
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.fqdns.create(connection_id=conn.id, fqdn=host(unique).upper() + ".", dns_record_type="a")
    # Only FQDN connections take records.
    ip = client.ip_connections.create(connection_name=f"{unique} ip").data
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.fqdns.create(connection_id=ip.id, fqdn=host(unique, "other"), dns_record_type="a")


def test_fqdn_connection_credentials_and_tokens(client: telnyx.Telnyx, unique: str):
    token = "fq-" + uuid.uuid4().hex[:20]
    # A random prefix may be one another test's connection already holds (connections get one of
    # the 10,000 four-digit prefixes by default): the API says so, and another is drawn.
    conn = None
    for _ in range(20):
        try:
            conn = fqdn_connection(
                client,
                f"{unique} auth",
                outbound={"ip_authentication_method": "ip-authentication", "ip_authentication_token": token, "tech_prefix": "%04d" % (uuid.uuid4().int % 10000)},
            )
            break
        except telnyx.UnprocessableEntityError as taken:
            assert {err.get("source", {}).get("pointer") for err in taken.body["errors"]} == {"/outbound/tech_prefix"}, taken.body
    assert conn is not None, "twenty prefixes drawn, every one taken"
    assert conn.outbound.ip_authentication_token == token
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        fqdn_connection(client, f"{unique} auth 2", outbound={"ip_authentication_token": token})
    assert "/outbound/ip_authentication_token" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError):
        fqdn_connection(client, f"{unique} bad ani", outbound={"ani_override": "call me"})

"""The four SIP connection types (/v2/credential_connections, /v2/ip_connections,
/v2/fqdn_connections, /v2/uac_connections) and their read-only union /v2/connections, through
the official `telnyx` SDK, unmodified, with an account's key.

Every type gets the same walk: create with realistic values (the raw JSON validated strictly
against the SDK's model), retrieve, list with page[size]=1 following every page (auto-pagination,
the page helpers and explicit page[number]), the SDK's `filter={"connection_name": {"contains":
...}}` (sent as filter[connection_name][contains]), sort, update (nested objects merge), delete,
then NotFoundError. What each type has of its own is in test_<type>_connections.py."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import telnyx
from telnyx.types import (
    Connection,
    ConnectionRetrieveResponse,
    CredentialConnection,
    CredentialConnectionCreateResponse,
    CredentialConnectionDeleteResponse,
    CredentialConnectionRetrieveResponse,
    CredentialConnectionUpdateResponse,
    FqdnConnection,
    FqdnConnectionCreateResponse,
    FqdnConnectionDeleteResponse,
    FqdnConnectionRetrieveResponse,
    FqdnConnectionUpdateResponse,
    IPConnection,
    IPConnectionCreateResponse,
    IPConnectionDeleteResponse,
    IPConnectionRetrieveResponse,
    IPConnectionUpdateResponse,
    UacConnection,
    UacConnectionCreateResponse,
    UacConnectionDeleteResponse,
    UacConnectionRetrieveResponse,
    UacConnectionUpdateResponse,
)

from telnyx.pagination import SyncDefaultFlatPagination
from telnyx.types.shared import ConnectionsPaginationMeta

from helpers import strict


def sip_user(prefix: str = "u") -> str:
    """A SIP user name no other test uses: letters and digits, a letter first, 4 to 32."""
    return prefix + uuid.uuid4().hex[:15]


def label() -> str:
    """A DNS label no other test uses (sip_subdomain is unique on the platform)."""
    return "sdk" + uuid.uuid4().hex[:12]


COMMON = dict(
    active=True,
    anchorsite_override="Amsterdam, Netherlands",
    dtmf_type="RFC 2833",
    encode_contact_header_enabled=True,
    encrypted_media="SRTP",
    default_on_hold_comfort_noise_enabled=True,
    call_cost_in_webhooks=True,
    webhook_event_url="https://pbx.example.com/telnyx/webhooks",
    webhook_event_failover_url="https://backup.example.com/telnyx/webhooks",
    webhook_api_version="2",
    webhook_timeout_secs=25,
    rtcp_settings={"capture_enabled": True, "port": "rtcp-mux", "report_frequency_secs": 10},
    jitter_buffer={"enable_jitter_buffer": True, "jitterbuffer_msec_min": 60, "jitterbuffer_msec_max": 200},
    noise_suppression="both",
    noise_suppression_details={"engine": "deep_filter_net", "attenuation_limit": 80},
)

INBOUND = dict(
    ani_number_format="+E.164",
    dnis_number_format="+e164",
    codecs=["G722", "G711U", "G711A"],
    channel_limit=10,
    generate_ringback_tone=True,
    isup_headers_enabled=True,
    prack_enabled=True,
    shaken_stir_enabled=True,
    sip_compact_headers_enabled=False,
    timeout_1xx_secs=5,
    timeout_2xx_secs=60,
)


def outbound(ovp_id: str, **more) -> dict:
    return dict(
        ani_override="+13125550100",
        ani_override_type="always",
        channel_limit=10,
        generate_ringback_tone=True,
        instant_ringback_enabled=False,
        localization="US",
        outbound_voice_profile_id=ovp_id,
        t38_reinvite_source="customer",
        **more,
    )


def credential_fields(name: str, ovp_id: str) -> dict:
    return dict(
        COMMON,
        connection_name=name,
        user_name=sip_user(),
        password="rH7q-Lx9!vT2pWz",
        sip_uri_calling_preference="internal",
        tags=["office", "berlin"],
        inbound=dict(INBOUND, simultaneous_ringing="enabled"),
        outbound=outbound(ovp_id),
    )


def ip_fields(name: str, ovp_id: str) -> dict:
    return dict(
        COMMON,
        connection_name=name,
        transport_protocol="UDP",
        tags=["pbx", "asterisk"],
        inbound=dict(
            INBOUND,
            sip_region="Europe",
            sip_subdomain=label(),
            sip_subdomain_receive_settings="only_my_connections",
            default_routing_method="round-robin",
        ),
        outbound=outbound(ovp_id, ip_authentication_method="tech-prefixp-charge-info"),
    )


def fqdn_fields(name: str, ovp_id: str) -> dict:
    return dict(
        COMMON,
        connection_name=name,
        transport_protocol="TCP",
        tags=["sbc"],
        inbound=dict(
            INBOUND,
            sip_region="US",
            sip_subdomain=label(),
            sip_subdomain_receive_settings="from_anyone",
            default_routing_method="sequential",
        ),
        outbound=outbound(ovp_id, ip_authentication_method="ip-authentication", timeout_1xx_secs=4, timeout_2xx_secs=80),
    )


def uac_fields(name: str, ovp_id: str) -> dict:
    return dict(
        COMMON,
        connection_name=name,
        sip_uri_calling_preference="disabled",
        tags=["uac"],
        inbound=dict(INBOUND, sip_region="US", simultaneous_ringing="disabled", default_routing_method="sequential"),
        outbound=outbound(ovp_id),
        external_uac_settings={
            "proxy": "pbx.example.com:5060",
            "username": "trunk-" + uuid.uuid4().hex[:8],
            "password": "Pbx-Secret-42",
            "auth_username": "trunkauth",
            "from_user": "trunkfrom",
            "outbound_proxy": "edge.example.com:5060",
            "transport": "UDP",
            "expiration_sec": 3600,
        },
        internal_uac_settings={"destination_uri": "frontdesk@sip.example.com"},
    )


@dataclass
class Kind:
    record_type: str
    resource: str
    model: Any
    create_response: Any
    retrieve_response: Any
    update_response: Any
    delete_response: Any
    fields: Callable[[str, str], dict]

    def api(self, client: telnyx.Telnyx) -> Any:
        return getattr(client, self.resource)

    def __str__(self) -> str:
        return self.resource


KINDS = [
    Kind(
        "credential_connection",
        "credential_connections",
        CredentialConnection,
        CredentialConnectionCreateResponse,
        CredentialConnectionRetrieveResponse,
        CredentialConnectionUpdateResponse,
        CredentialConnectionDeleteResponse,
        credential_fields,
    ),
    Kind(
        "ip_connection",
        "ip_connections",
        IPConnection,
        IPConnectionCreateResponse,
        IPConnectionRetrieveResponse,
        IPConnectionUpdateResponse,
        IPConnectionDeleteResponse,
        ip_fields,
    ),
    Kind(
        "fqdn_connection",
        "fqdn_connections",
        FqdnConnection,
        FqdnConnectionCreateResponse,
        FqdnConnectionRetrieveResponse,
        FqdnConnectionUpdateResponse,
        FqdnConnectionDeleteResponse,
        fqdn_fields,
    ),
    Kind(
        "uac_connection",
        "uac_connections",
        UacConnection,
        UacConnectionCreateResponse,
        UacConnectionRetrieveResponse,
        UacConnectionUpdateResponse,
        UacConnectionDeleteResponse,
        uac_fields,
    ),
]


@pytest.fixture
def ovp(client: telnyx.Telnyx, unique: str) -> str:
    """An outbound voice profile the connections point at."""
    p = client.outbound_voice_profiles.create(name=f"{unique} profile", whitelisted_destinations=["US", "CA", "DE"])
    yield p.data.id
    try:
        client.outbound_voice_profiles.delete(p.data.id)
    except telnyx.APIError:
        pass


def make(client: telnyx.Telnyx, kind: Kind, name: str, ovp_id: str) -> Any:
    raw = kind.api(client).with_raw_response.create(**kind.fields(name, ovp_id))
    assert raw.status_code == 201, raw.text()
    strict(kind.create_response, raw.json())
    made = raw.parse().data
    assert isinstance(made, kind.model)
    return made


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_create_with_realistic_values_parses_strictly(client: telnyx.Telnyx, unique: str, ovp: str, kind: Kind):
    fields = kind.fields(f"{unique} {kind.record_type} full", ovp)
    raw = kind.api(client).with_raw_response.create(**fields)
    assert raw.status_code == 201, raw.text()  # the contract's code for these creates
    assert raw.http_request.url.path.endswith(f"/v2/{kind.resource}")
    body = raw.json()
    strict(kind.create_response, body)
    c = raw.parse().data
    assert isinstance(c, kind.model)
    assert c.id and c.id.isdigit()
    assert c.record_type == kind.record_type
    assert c.connection_name == fields["connection_name"]
    assert c.active is True
    assert c.anchorsite_override == "Amsterdam, Netherlands"
    assert c.dtmf_type == "RFC 2833"
    assert c.encrypted_media == "SRTP"
    assert c.encode_contact_header_enabled is True
    assert c.default_on_hold_comfort_noise_enabled is True
    assert c.call_cost_in_webhooks is True
    assert c.webhook_event_url == "https://pbx.example.com/telnyx/webhooks"
    assert c.webhook_event_failover_url == "https://backup.example.com/telnyx/webhooks"
    assert c.webhook_api_version == "2"
    assert c.webhook_timeout_secs == 25
    assert c.tags == fields["tags"]
    assert c.rtcp_settings is not None
    assert (c.rtcp_settings.capture_enabled, c.rtcp_settings.port, c.rtcp_settings.report_frequency_secs) == (
        True,
        "rtcp-mux",
        10,
    )
    assert c.jitter_buffer is not None and c.jitter_buffer.enable_jitter_buffer is True
    assert (c.jitter_buffer.jitterbuffer_msec_min, c.jitter_buffer.jitterbuffer_msec_max) == (60, 200)
    assert c.noise_suppression == "both"
    assert c.noise_suppression_details is not None
    assert (c.noise_suppression_details.engine, c.noise_suppression_details.attenuation_limit) == (
        "deep_filter_net",
        80,
    )
    i = c.inbound
    assert i is not None
    assert i.ani_number_format == "+E.164" and i.dnis_number_format == "+e164"
    assert i.codecs == ["G722", "G711U", "G711A"]
    assert i.channel_limit == 10
    assert i.generate_ringback_tone is True and i.isup_headers_enabled is True
    assert i.prack_enabled is True and i.shaken_stir_enabled is True
    assert i.sip_compact_headers_enabled is False
    assert (i.timeout_1xx_secs, i.timeout_2xx_secs) == (5, 60)
    o = c.outbound
    assert o is not None
    assert o.outbound_voice_profile_id == ovp
    assert o.ani_override == "+13125550100" and o.ani_override_type == "always"
    assert o.channel_limit == 10 and o.localization == "US"
    assert o.instant_ringback_enabled is False and o.generate_ringback_tone is True
    assert o.t38_reinvite_source == "customer"
    assert c.created_at and c.created_at.endswith("Z") and c.updated_at == c.created_at

    # Retrieve answers the same connection (the password, if any, only on the request that set it).
    got = kind.api(client).with_raw_response.retrieve(c.id)
    assert got.status_code == 200, got.text()
    strict(kind.retrieve_response, got.json())
    fetched = got.parse().data
    assert isinstance(fetched, kind.model)
    expected = c.to_dict()
    shown = fetched.to_dict()
    expected.pop("password", None)
    shown.pop("password", None)
    if isinstance(expected.get("external_uac_settings"), dict):
        expected["external_uac_settings"].pop("password", None)
        shown["external_uac_settings"].pop("password", None)
    assert shown == expected


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_list_page_size_1_follows_every_page(client: telnyx.Telnyx, unique: str, ovp: str, kind: Kind):
    ids = [make(client, kind, f"{unique} page {i}", ovp).id for i in range(3)]
    only_mine = {"connection_name": {"contains": unique}}
    api = kind.api(client)

    # Auto-pagination: iterating fetches page[number]=2, 3 by itself, keeping size and filter.
    first = api.with_raw_response.list(page_size=1, filter=only_mine)
    assert first.status_code == 200, first.text()
    assert first.http_request.url.params["page[size]"] == "1"
    assert first.http_request.url.params["filter[connection_name][contains]"] == unique
    strict(SyncDefaultFlatPagination[kind.model], first.json())
    strict(ConnectionsPaginationMeta, first.json()["meta"])
    seen = list(api.list(page_size=1, filter=only_mine))
    assert sorted(c.id for c in seen) == sorted(ids)
    assert all(isinstance(c, kind.model) for c in seen)
    stamps = [c.created_at for c in seen]
    assert stamps == sorted(stamps, reverse=True), "the default sort is -created_at"

    # Page by page with the SDK's helpers.
    page = api.list(page_size=1, filter=only_mine, sort="connection_name")
    walked = []
    while True:
        assert len(page.data) == 1
        assert page.meta is not None and page.meta.total_pages == 3
        assert page.meta.total_results == 3  # ConnectionsPaginationMeta
        walked.extend(c.id for c in page.data)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert walked == ids, "sort=connection_name ascending: page 0, 1, 2"

    # Explicit page[number], both directions.
    explicit = []
    for n in (1, 2, 3):
        page = api.list(page_number=n, page_size=1, filter=only_mine, sort="connection_name")
        assert page.meta.page_number == n and page.meta.page_size == 1
        explicit.extend(c.id for c in page.data)
    assert explicit == ids
    descending = [c.id for c in api.list(page_size=2, filter=only_mine, sort="-connection_name")]
    assert descending == list(reversed(ids))
    past_end = api.list(page_number=4, page_size=1, filter=only_mine)
    assert past_end.data == [] and not past_end.has_next_page()

    # Unfiltered, the account's whole list walks the same way and holds ours once each.
    everything = [c.id for c in api.list(page_size=1)]
    assert len(everything) == len(set(everything))
    assert set(ids) <= set(everything)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_filter_connection_name_contains(client: telnyx.Telnyx, unique: str, ovp: str, kind: Kind):
    api = kind.api(client)
    a = make(client, kind, f"{unique} Alpha Office", ovp)
    b = make(client, kind, f"{unique} beta office", ovp)
    make(client, kind, f"{unique} gamma", ovp)
    found = api.list(filter={"connection_name": {"contains": f"{unique} alpha"}})
    assert [c.id for c in found.data] == [a.id]
    found = api.list(filter={"connection_name": {"contains": "OFFICE"}}, sort="connection_name", page_size=250)
    mine = [c.id for c in found if c.connection_name.startswith(unique)]
    assert mine == [a.id, b.id], "contains is case-insensitive"
    none = api.list(filter={"connection_name": {"contains": f"{unique}-nothing"}})
    assert none.data == [] and none.meta.total_results == 0
    # The contract: "Requires at least three characters."
    with pytest.raises(telnyx.BadRequestError):
        api.list(filter={"connection_name": {"contains": "ab"}})
    # filter[outbound_voice_profile_id] as the SDK spells it.
    by_profile = {c.id for c in api.list(filter={"outbound_voice_profile_id": ovp}, page_size=250)}
    assert {a.id, b.id} <= by_profile
    assert api.list(filter={"outbound_voice_profile_id": "1234567890123456789"}).data == []


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_update_then_retrieve(client: telnyx.Telnyx, unique: str, ovp: str, kind: Kind):
    api = kind.api(client)
    c = make(client, kind, f"{unique} before", ovp)
    raw = api.with_raw_response.update(
        c.id,
        connection_name=f"{unique} after",
        active=False,
        tags=["moved"],
        anchorsite_override="Frankfurt, Germany",
        webhook_event_url="https://pbx2.example.com/hooks",
        inbound={"channel_limit": 20, "codecs": ["OPUS", "G722"]},
        outbound={"channel_limit": 4},
    )
    assert raw.status_code == 200, raw.text()
    strict(kind.update_response, raw.json())
    u = raw.parse().data
    assert isinstance(u, kind.model)
    assert u.id == c.id
    assert u.connection_name == f"{unique} after"
    assert u.active is False
    assert u.tags == ["moved"]
    assert u.anchorsite_override == "Frankfurt, Germany"
    assert u.webhook_event_url == "https://pbx2.example.com/hooks"
    assert u.inbound.channel_limit == 20 and u.inbound.codecs == ["OPUS", "G722"]
    assert u.inbound.ani_number_format == "+E.164", "nested objects merge key by key"
    assert u.outbound.channel_limit == 4 and u.outbound.outbound_voice_profile_id == ovp
    assert u.dtmf_type == "RFC 2833", "fields not sent stay"
    assert u.created_at == c.created_at and u.updated_at >= c.updated_at
    got = api.retrieve(c.id).data
    assert got.connection_name == u.connection_name and got.active is False
    assert got.inbound.to_dict() == u.inbound.to_dict()
    assert got.outbound.to_dict() == u.outbound.to_dict()
    # The new name is what the filter finds; the old one is gone.
    assert [x.id for x in api.list(filter={"connection_name": {"contains": f"{unique} after"}})] == [c.id]
    assert api.list(filter={"connection_name": {"contains": f"{unique} before"}}).data == []
    # Invalid values are the SDK's UnprocessableEntityError and change nothing.
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        api.update(c.id, anchorsite_override="Atlantis")  # type: ignore[arg-type]
    assert e.value.body["errors"][0]["code"] in ("10015", "10032")
    assert api.retrieve(c.id).data.anchorsite_override == "Frankfurt, Germany"


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_delete_then_not_found(client: telnyx.Telnyx, unique: str, ovp: str, kind: Kind):
    api = kind.api(client)
    c = make(client, kind, f"{unique} doomed", ovp)
    raw = api.with_raw_response.delete(c.id)
    assert raw.status_code == 200, raw.text()
    strict(kind.delete_response, raw.json())
    deleted = raw.parse().data
    assert deleted.id == c.id and deleted.connection_name == c.connection_name
    with pytest.raises(telnyx.NotFoundError) as e:
        api.retrieve(c.id)
    assert e.value.status_code == 404
    assert e.value.body["errors"][0]["code"] == "10005"
    with pytest.raises(telnyx.NotFoundError):
        api.update(c.id, connection_name=f"{unique} ghost")
    with pytest.raises(telnyx.NotFoundError):
        api.delete(c.id)
    with pytest.raises(telnyx.NotFoundError):
        client.connections.retrieve(c.id)
    assert api.list(filter={"connection_name": {"contains": unique}}).data == []


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_empty_connection_name_is_unprocessable(client: telnyx.Telnyx, kind: Kind):
    credentials = {"user_name": sip_user(), "password": "long-enough-pw"} if kind.resource == "credential_connections" else {}
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        kind.api(client).create(connection_name="", **credentials)
    pointers = {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    assert "/connection_name" in pointers, e.value.body


# ---------------------------------------------------------------------------------------------
# /v2/connections: every type at once, read only.


def test_connections_union_lists_and_retrieves_every_kind(client: telnyx.Telnyx, unique: str, ovp: str):
    made = {k.record_type: make(client, k, f"{unique} union {k.record_type}", ovp) for k in KINDS}
    only_mine = {"connection_name": {"contains": f"{unique} union"}}

    raw = client.connections.with_raw_response.list(filter=only_mine, sort="connection_name")
    assert raw.status_code == 200, raw.text()
    strict(SyncDefaultFlatPagination[Connection], raw.json())
    strict(ConnectionsPaginationMeta, raw.json()["meta"])
    listed = raw.parse()
    assert sorted((c.record_type, c.id) for c in listed.data) == sorted((k, c.id) for k, c in made.items())
    assert [c.connection_name for c in listed.data] == sorted(c.connection_name for c in made.values())
    assert listed.meta.total_results == 4

    # Page size 1: auto-pagination and explicit page numbers across the types.
    walked = [c.id for c in client.connections.list(page_size=1, filter=only_mine, sort="connection_name")]
    assert walked == [c.id for c in listed.data]
    explicit = []
    for n in (1, 2, 3, 4):
        page = client.connections.list(page_number=n, page_size=1, filter=only_mine, sort="connection_name")
        assert page.meta.total_pages == 4 and page.meta.page_number == n
        explicit.extend(c.id for c in page.data)
    assert explicit == walked
    assert not page.has_next_page()

    for kind, c in made.items():
        got = client.connections.with_raw_response.retrieve(c.id)
        assert got.status_code == 200, got.text()
        strict(ConnectionRetrieveResponse, got.json())
        conn = got.parse().data
        assert isinstance(conn, Connection)
        assert conn.id == c.id and conn.record_type == kind
        assert conn.connection_name == c.connection_name
        assert conn.active is True and conn.anchorsite_override == "Amsterdam, Netherlands"
        assert conn.outbound_voice_profile_id == ovp
        assert conn.tags == c.tags
        assert conn.webhook_api_version == "2"
        assert conn.webhook_event_url == "https://pbx.example.com/telnyx/webhooks"
        assert conn.webhook_event_failover_url == "https://backup.example.com/telnyx/webhooks"
        assert conn.created_at == c.created_at and conn.updated_at == c.updated_at

    # The union follows the types' updates and deletes.
    cred = made["credential_connection"]
    client.credential_connections.update(cred.id, connection_name=f"{unique} union zz renamed")
    assert client.connections.retrieve(cred.id).data.connection_name == f"{unique} union zz renamed"
    client.credential_connections.delete(cred.id)
    with pytest.raises(telnyx.NotFoundError):
        client.connections.retrieve(cred.id)
    assert cred.id not in [c.id for c in client.connections.list(filter=only_mine)]

    by_profile = {c.id for c in client.connections.list(filter={"outbound_voice_profile_id": ovp}, page_size=250)}
    assert {c.id for k, c in made.items() if k != "credential_connection"} <= by_profile


def test_connections_active_calls_is_an_empty_page(client: telnyx.Telnyx, unique: str, ovp: str):
    c = make(client, KINDS[0], f"{unique} calls", ovp)
    raw = client.connections.with_raw_response.list_active_calls(c.id, page_size=1)
    assert raw.status_code == 200, raw.text()
    page = raw.parse()
    assert page.data == [] and not page.has_next_page()
    assert list(client.connections.list_active_calls(c.id)) == []
    with pytest.raises(telnyx.NotFoundError):
        client.connections.list_active_calls("1234567890123456789")


def test_async_client_pages_the_union(base_url: str, account_key: str, unique: str, ovp: str):
    async def run() -> tuple[list[str], list[str]]:
        async with telnyx.AsyncTelnyx(api_key=account_key, base_url=base_url, max_retries=0, timeout=10) as c:
            made = [
                (await c.credential_connections.create(connection_name=f"{unique} async 0", user_name=sip_user(), password="async-password-1")).data.id,
                (await c.ip_connections.create(connection_name=f"{unique} async 1")).data.id,
                (await c.fqdn_connections.create(connection_name=f"{unique} async 2")).data.id,
            ]
            pages = c.connections.list(page_size=1, filter={"connection_name": {"contains": f"{unique} async"}}, sort="connection_name")
            seen = [x.id async for x in pages]
            await c.ip_connections.delete(made[1])
            return made, seen

    made, seen = asyncio.run(run())
    assert seen == made

"""Phone numbers' voice settings (/v2/phone_numbers/voice, /v2/phone_numbers/{id}/voice) through
the official `telnyx` SDK. The operator adds the numbers over plain HTTP (POST /v2/phone_numbers
with `account_id`, an operator endpoint); the account points them at its connection with the
SDK's `client.phone_numbers.update(id, connection_id=...)`, then reads and changes their voice
settings with `client.phone_numbers.voice.retrieve/update/list`."""

from __future__ import annotations

import random

import pytest
import telnyx
from telnyx.pagination import SyncDefaultFlatPagination
from telnyx.types import PhoneNumberRetrieveResponse, PhoneNumberUpdateResponse
from telnyx.types.phone_numbers import (
    PhoneNumberWithVoiceSettings,
    VoiceRetrieveResponse,
    VoiceUpdateResponse,
)

from helpers import Http, strict
from test_connections import sip_user


@pytest.fixture(scope="session")
def account_id(http: Http, account_key: str) -> str:
    r = http.request("GET", "/accounts", account_key)
    assert r.status == 200, r.text
    return r.body["data"][0]["id"]


@pytest.fixture
def numbers(http: Http, admin_key: str, account_id: str):
    """Adds numbers for the SDK's account as the operator: `add(n)` gives n numbers sharing a
    digit run no other test uses (`add.stem`, for filter[phone_number]); deleted afterwards."""
    made = []
    stem = "312" + "".join(random.choice("0123456789") for _ in range(6))

    def add(n: int = 1, **fields) -> list[dict]:
        out = []
        for _ in range(n):
            number = f"+1{stem}{len(made)}"
            r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": number, "account_id": account_id, **fields})
            assert r.status == 201, r.text
            made.append(r.body["data"]["id"])
            out.append(r.body["data"])
        return out

    add.stem = stem
    yield add
    for pid in made:
        http.request("DELETE", f"/phone_numbers/{pid}", admin_key)


def connection(client: telnyx.Telnyx, name: str):
    return client.credential_connections.create(connection_name=name, user_name=sip_user(), password="phone-password-1").data


def test_voice_settings_retrieve_and_update(client: telnyx.Telnyx, unique: str, numbers):
    conn = connection(client, f"{unique} front desk")
    (num,) = numbers(1)

    # The account points the number at its connection with the SDK.
    raw = client.phone_numbers.with_raw_response.update(num["id"], connection_id=conn.id, customer_reference=f"{unique}-ref")
    assert raw.status_code == 200, raw.text()
    assert raw.http_request.method == "PATCH"
    pointed = raw.parse().data
    assert pointed.connection_id == conn.id and pointed.connection_name == conn.connection_name
    assert pointed.customer_reference == f"{unique}-ref"

    raw = client.phone_numbers.voice.with_raw_response.retrieve(num["id"])
    assert raw.status_code == 200, raw.text()
    assert raw.http_request.url.path.endswith(f"/v2/phone_numbers/{num['id']}/voice")
    strict(VoiceRetrieveResponse, raw.json())
    v = raw.parse().data
    assert isinstance(v, PhoneNumberWithVoiceSettings)
    assert v.id == num["id"] and v.phone_number == num["phone_number"]
    assert v.record_type == "voice_settings"
    assert v.connection_id == conn.id
    assert v.customer_reference == f"{unique}-ref"
    assert v.usage_payment_method == "pay-per-minute"
    assert v.inbound_call_screening == "disabled"
    assert v.tech_prefix_enabled is False
    assert v.call_recording.inbound_call_recording_enabled is False
    assert v.cnam_listing.cnam_listing_enabled is False
    assert v.media_features is not None
    assert v.emergency is not None and v.emergency.emergency_enabled is False

    raw = client.phone_numbers.voice.with_raw_response.update(
        num["id"],
        call_forwarding={"call_forwarding_enabled": True, "forwards_to": "+13125550199", "forwarding_type": "on-failure"},
        call_recording={
            "inbound_call_recording_enabled": True,
            "inbound_call_recording_channels": "dual",
            "inbound_call_recording_format": "mp3",
        },
        cnam_listing={"cnam_listing_enabled": True, "cnam_listing_details": "ACME CORP"},
        caller_id_name_enabled=True,
        inbound_call_screening="flag_calls",
        media_features={"rtp_auto_adjust_enabled": False, "accept_any_rtp_packets_enabled": True, "t38_fax_gateway_enabled": True},
        tech_prefix_enabled=True,
        translated_number="+13125550100",
        usage_payment_method="channel",
    )
    assert raw.status_code == 200, raw.text()
    assert raw.http_request.method == "PATCH"
    strict(VoiceUpdateResponse, raw.json())
    u = raw.parse().data
    assert (u.call_forwarding.call_forwarding_enabled, u.call_forwarding.forwards_to, u.call_forwarding.forwarding_type) == (
        True,
        "+13125550199",
        "on-failure",
    )
    rec = u.call_recording
    assert (rec.inbound_call_recording_enabled, rec.inbound_call_recording_channels, rec.inbound_call_recording_format) == (
        True,
        "dual",
        "mp3",
    )
    assert (u.cnam_listing.cnam_listing_enabled, u.cnam_listing.cnam_listing_details) == (True, "ACME CORP")
    assert u.inbound_call_screening == "flag_calls"
    mf = u.media_features
    assert (mf.rtp_auto_adjust_enabled, mf.accept_any_rtp_packets_enabled, mf.t38_fax_gateway_enabled) == (False, True, True)
    assert u.tech_prefix_enabled is True
    assert u.translated_number == "+13125550100"
    assert u.usage_payment_method == "channel"
    assert u.connection_id == conn.id
    assert client.phone_numbers.voice.retrieve(num["id"]).data.to_dict() == u.to_dict()

    # Nested objects merge key by key; fields not sent stay.
    p = client.phone_numbers.voice.update(num["id"], call_recording={"inbound_call_recording_format": "wav"}).data
    assert p.call_recording.inbound_call_recording_format == "wav"
    assert p.call_recording.inbound_call_recording_channels == "dual"
    assert p.usage_payment_method == "channel"

    # The number's own summary follows.
    n = client.phone_numbers.retrieve(num["id"]).data
    assert n.call_recording_enabled is True and n.cnam_listing_enabled is True and n.t38_fax_gateway_enabled is True

    # Invalid values are the SDK's UnprocessableEntityError.
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.phone_numbers.voice.update(num["id"], call_forwarding={"forwards_to": "call my cell"})
    assert "/call_forwarding/forwards_to" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.phone_numbers.voice.update(num["id"], usage_payment_method="free")  # type: ignore[arg-type]
    with pytest.raises(telnyx.NotFoundError):
        client.phone_numbers.voice.retrieve("1234567890123456789")
    with pytest.raises(telnyx.NotFoundError):
        client.phone_numbers.voice.update("1234567890123456789", tech_prefix_enabled=False)


def test_a_connection_of_another_account_or_none_is_refused(client: telnyx.Telnyx, unique: str, numbers):
    (num,) = numbers(1)
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.phone_numbers.update(num["id"], connection_id="1234567890123456789")
    assert "/connection_id" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    # Any connection type will do; deleting the connection detaches the number.
    ip = client.ip_connections.create(connection_name=f"{unique} ip").data
    assert client.phone_numbers.update(num["id"], connection_id=ip.id).data.connection_id == ip.id
    assert client.phone_numbers.voice.retrieve(num["id"]).data.connection_id == ip.id
    client.ip_connections.delete(ip.id)
    assert client.phone_numbers.voice.retrieve(num["id"]).data.connection_id is None


def test_voice_list_page_size_1_filters_and_sort(client: telnyx.Telnyx, unique: str, numbers):
    conn_a = connection(client, f"{unique} Alpha trunk")
    conn_b = connection(client, f"{unique} beta trunk")
    nums = numbers(3)
    ids = [n["id"] for n in nums]
    client.phone_numbers.update(ids[0], connection_id=conn_a.id, customer_reference=f"{unique}-a")
    client.phone_numbers.update(ids[1], connection_id=conn_b.id)
    client.phone_numbers.voice.update(ids[1], usage_payment_method="channel")
    mine = {"phone_number": numbers.stem}

    raw = client.phone_numbers.voice.with_raw_response.list(filter=mine, page_size=1, sort="phone_number")
    assert raw.status_code == 200, raw.text()
    assert raw.http_request.url.params["filter[phone_number]"] == numbers.stem
    strict(SyncDefaultFlatPagination[PhoneNumberWithVoiceSettings], raw.json())
    first = raw.parse()
    assert first.meta.total_pages == 3 and first.meta.total_results == 3

    # Auto-pagination, the page helpers, explicit page numbers.
    assert [v.id for v in client.phone_numbers.voice.list(filter=mine, page_size=1, sort="phone_number")] == ids
    page, walked = first, []
    while True:
        walked.extend(v.id for v in page.data)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert walked == ids
    explicit = [
        v.id
        for n in (1, 2, 3)
        for v in client.phone_numbers.voice.list(filter=mine, page_size=1, page_number=n, sort="phone_number").data
    ]
    assert explicit == ids
    assert client.phone_numbers.voice.list(filter=mine, page_size=1, page_number=4).data == []
    newest_first = [v.id for v in client.phone_numbers.voice.list(filter=mine)]
    assert sorted(newest_first) == sorted(ids)

    # filter[connection_name][contains] (case-insensitive), customer_reference,
    # voice.usage_payment_method; sort=connection_name puts numbers without one last.
    by_name = client.phone_numbers.voice.list(filter={"connection_name": {"contains": f"{unique} ALPHA"}})
    assert [v.id for v in by_name] == [ids[0]]
    both = client.phone_numbers.voice.list(filter={"connection_name": {"contains": unique}}, sort="connection_name")
    assert [v.id for v in both] == [ids[0], ids[1]]
    assert [v.id for v in client.phone_numbers.voice.list(filter={"customer_reference": f"{unique}-a"})] == [ids[0]]
    channel = client.phone_numbers.voice.with_raw_response.list(
        filter={"phone_number": numbers.stem, "voice_usage_payment_method": "channel"}
    )
    assert channel.http_request.url.params["filter[voice.usage_payment_method]"] == "channel"
    assert [v.id for v in channel.parse()] == [ids[1]]
    by_conn = [v.id for v in client.phone_numbers.voice.list(filter=mine, sort="connection_name")]
    assert by_conn == [ids[0], ids[1], ids[2]]
    with pytest.raises(telnyx.BadRequestError):
        client.phone_numbers.voice.list(filter={"phone_number": "12"})


def test_phone_number_object_parses_strictly_with_the_sdk_model(client: telnyx.Telnyx, unique: str, numbers):
    """/v2/phone_numbers is an operator extension, but the SDK has a client for it
    (`client.phone_numbers.retrieve/update/list`) and the account uses it to point its numbers
    at a connection. The SDK's model (NumbersPhoneNumberDetailed) requires `country_iso_alpha2`,
    `deletion_lock_enabled` and `phone_number_type`, among others."""
    conn = connection(client, f"{unique} strict")
    (num,) = numbers(1)
    raw = client.phone_numbers.with_raw_response.update(num["id"], connection_id=conn.id)
    assert raw.status_code == 200, raw.text()
    strict(PhoneNumberUpdateResponse, raw.json())
    raw = client.phone_numbers.with_raw_response.retrieve(num["id"])
    assert raw.status_code == 200, raw.text()
    strict(PhoneNumberRetrieveResponse, raw.json())

"""/v2/dynamic_emergency_addresses and /v2/dynamic_emergency_endpoints through the official
`telnyx` SDK: create with real-looking addresses (US, CA, PR), retrieve, list with page[size]=1
following every page and the SDK's `filter` (status, country_code), endpoints bound to an
address, delete then NotFoundError. Neither has a PATCH in the contract (nor in the SDK).
Each test uses a fresh account, so its lists hold only what it made."""

from __future__ import annotations

import uuid

import pytest
import telnyx
from telnyx.types import (
    DynamicEmergencyAddress,
    DynamicEmergencyAddressCreateResponse,
    DynamicEmergencyAddressDeleteResponse,
    DynamicEmergencyAddressRetrieveResponse,
    DynamicEmergencyEndpoint,
    DynamicEmergencyEndpointCreateResponse,
    DynamicEmergencyEndpointDeleteResponse,
    DynamicEmergencyEndpointRetrieveResponse,
)

from helpers import sdk_client, strict

AUSTIN = dict(
    house_number="600",
    street_pre_directional="W",
    street_name="Congress",
    street_suffix="Ave",
    extended_address="Suite 1200",
    locality="Austin",
    administrative_area="TX",
    postal_code="78701",
    country_code="US",
)
TORONTO = dict(
    house_number="290",
    street_name="Bremner",
    street_suffix="Blvd",
    locality="Toronto",
    administrative_area="ON",
    postal_code="M5V 3L9",
    country_code="CA",
)
SAN_JUAN = dict(
    house_number="100",
    street_name="Calle Fortaleza",
    locality="San Juan",
    administrative_area="PR",
    postal_code="00901",
    country_code="PR",
)


@pytest.fixture
def fresh(base_url: str, new_account):
    """An SDK client for a fresh account."""
    _, key = new_account()
    with sdk_client(base_url, key) as c:
        yield c


def test_addresses_create_retrieve_list_delete(fresh: telnyx.Telnyx):
    raw = fresh.dynamic_emergency_addresses.with_raw_response.create(**AUSTIN)
    assert raw.status_code == 201, raw.text()
    assert raw.http_request.url.path.endswith("/v2/dynamic_emergency_addresses")
    strict(DynamicEmergencyAddressCreateResponse, raw.json())
    a = raw.parse().data
    assert isinstance(a, DynamicEmergencyAddress)
    uuid.UUID(a.id)  # the contract's ids here are UUIDs
    assert a.record_type == "dynamic_emergency_address"
    assert a.status == "activated"
    assert (a.house_number, a.street_pre_directional, a.street_name, a.street_suffix) == ("600", "W", "Congress", "Ave")
    assert a.extended_address == "STE 1200", "the docs' abbreviations"
    assert (a.locality, a.administrative_area, a.postal_code, a.country_code) == ("Austin", "TX", "78701", "US")
    assert a.sip_geolocation_id and len(a.sip_geolocation_id) == 10
    assert a.created_at and a.updated_at

    got = fresh.dynamic_emergency_addresses.with_raw_response.retrieve(a.id)
    assert got.status_code == 200, got.text()
    strict(DynamicEmergencyAddressRetrieveResponse, got.json())
    assert got.parse().data.to_dict() == a.to_dict()

    t = fresh.dynamic_emergency_addresses.create(**TORONTO).data
    s = fresh.dynamic_emergency_addresses.create(**SAN_JUAN).data
    assert (t.country_code, t.postal_code, s.country_code) == ("CA", "M5V 3L9", "PR")
    ids = [a.id, t.id, s.id]

    listed = fresh.dynamic_emergency_addresses.with_raw_response.list(page_size=1)
    assert listed.status_code == 200, listed.text()
    for item in listed.json()["data"]:
        strict(DynamicEmergencyAddress, item)
    first = listed.parse()
    assert first.meta.total_pages == 3 and first.meta.total_results == 3
    assert [x.id for x in fresh.dynamic_emergency_addresses.list(page_size=1)] == ids, "oldest first"
    page, walked = first, []
    while True:
        walked.extend(x.id for x in page.data)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert walked == ids
    explicit = [x.id for n in (1, 2, 3) for x in fresh.dynamic_emergency_addresses.list(page_size=1, page_number=n).data]
    assert explicit == ids
    assert fresh.dynamic_emergency_addresses.list(page_size=1, page_number=4).data == []

    assert [x.id for x in fresh.dynamic_emergency_addresses.list(filter={"country_code": "CA"})] == [t.id]
    assert [x.id for x in fresh.dynamic_emergency_addresses.list(filter={"status": "activated"})] == ids
    assert fresh.dynamic_emergency_addresses.list(filter={"status": "pending"}).data == []
    with pytest.raises(telnyx.BadRequestError):
        fresh.dynamic_emergency_addresses.list(filter={"status": "lost"})  # type: ignore[typeddict-item]

    raw = fresh.dynamic_emergency_addresses.with_raw_response.delete(t.id)
    assert raw.status_code == 200, raw.text()
    strict(DynamicEmergencyAddressDeleteResponse, raw.json())
    assert raw.parse().data.id == t.id
    with pytest.raises(telnyx.NotFoundError) as e:
        fresh.dynamic_emergency_addresses.retrieve(t.id)
    assert e.value.body["errors"][0]["code"] == "10005"
    with pytest.raises(telnyx.NotFoundError):
        fresh.dynamic_emergency_addresses.delete(t.id)
    with pytest.raises(telnyx.NotFoundError):
        fresh.dynamic_emergency_addresses.retrieve("not-a-uuid")
    assert [x.id for x in fresh.dynamic_emergency_addresses.list()] == [a.id, s.id]


def test_invalid_addresses_are_unprocessable(fresh: telnyx.Telnyx):
    for bad, pointer in (
        (dict(AUSTIN, postal_code="7870"), "/postal_code"),
        (dict(AUSTIN, administrative_area="ON"), "/administrative_area"),
        (dict(TORONTO, postal_code="90210"), "/postal_code"),
        (dict(AUSTIN, street_name=" "), "/street_name"),
    ):
        with pytest.raises(telnyx.UnprocessableEntityError) as e:
            fresh.dynamic_emergency_addresses.create(**bad)
        assert pointer in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}, (bad, e.value.body)
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        fresh.dynamic_emergency_addresses.create(**dict(AUSTIN, country_code="MX"))  # type: ignore[arg-type]
    assert e.value.body["errors"][0]["code"] == "10032"
    assert fresh.dynamic_emergency_addresses.list().data == []


def test_endpoints_create_retrieve_list_delete(fresh: telnyx.Telnyx):
    office = fresh.dynamic_emergency_addresses.create(**AUSTIN).data
    branch = fresh.dynamic_emergency_addresses.create(**TORONTO).data

    raw = fresh.dynamic_emergency_endpoints.with_raw_response.create(
        dynamic_emergency_address_id=office.id, callback_number="+15125550142", caller_name="Reception Desk"
    )
    assert raw.status_code == 201, raw.text()
    strict(DynamicEmergencyEndpointCreateResponse, raw.json())
    e1 = raw.parse().data
    assert isinstance(e1, DynamicEmergencyEndpoint)
    uuid.UUID(e1.id)
    assert e1.record_type == "dynamic_emergency_endpoint"
    assert (e1.dynamic_emergency_address_id, e1.callback_number, e1.caller_name) == (office.id, "+15125550142", "Reception Desk")
    assert e1.status == "activated"
    assert e1.sip_from_id and len(e1.sip_from_id) == 10

    got = fresh.dynamic_emergency_endpoints.with_raw_response.retrieve(e1.id)
    assert got.status_code == 200, got.text()
    strict(DynamicEmergencyEndpointRetrieveResponse, got.json())
    assert got.parse().data.to_dict() == e1.to_dict()

    e2 = fresh.dynamic_emergency_endpoints.create(dynamic_emergency_address_id=office.id, callback_number="+15125550143", caller_name="Warehouse").data
    e3 = fresh.dynamic_emergency_endpoints.create(dynamic_emergency_address_id=branch.id, callback_number="+14165550100", caller_name="Toronto Office").data
    ids = [e1.id, e2.id, e3.id]

    listed = fresh.dynamic_emergency_endpoints.with_raw_response.list(page_size=1)
    for item in listed.json()["data"]:
        strict(DynamicEmergencyEndpoint, item)
    assert listed.parse().meta.total_pages == 3
    assert [x.id for x in fresh.dynamic_emergency_endpoints.list(page_size=1)] == ids
    explicit = [x.id for n in (1, 2, 3) for x in fresh.dynamic_emergency_endpoints.list(page_size=1, page_number=n).data]
    assert explicit == ids
    assert [x.id for x in fresh.dynamic_emergency_endpoints.list(filter={"country_code": "ca"})] == [e3.id]
    assert [x.id for x in fresh.dynamic_emergency_endpoints.list(filter={"status": "activated"}, page_size=2)] == ids

    # An address an endpoint uses cannot be deleted.
    with pytest.raises(telnyx.UnprocessableEntityError) as err:
        fresh.dynamic_emergency_addresses.delete(branch.id)
    assert err.value.body["errors"][0]["code"] == "10007"

    raw = fresh.dynamic_emergency_endpoints.with_raw_response.delete(e3.id)
    assert raw.status_code == 200, raw.text()
    strict(DynamicEmergencyEndpointDeleteResponse, raw.json())
    with pytest.raises(telnyx.NotFoundError):
        fresh.dynamic_emergency_endpoints.retrieve(e3.id)
    with pytest.raises(telnyx.NotFoundError):
        fresh.dynamic_emergency_endpoints.delete(e3.id)
    fresh.dynamic_emergency_addresses.delete(branch.id)

    with pytest.raises(telnyx.UnprocessableEntityError) as err:
        fresh.dynamic_emergency_endpoints.create(dynamic_emergency_address_id=branch.id, callback_number="+14165550100", caller_name="Gone")
    assert "/dynamic_emergency_address_id" in {e.get("source", {}).get("pointer") for e in err.value.body["errors"]}
    with pytest.raises(telnyx.UnprocessableEntityError) as err:
        fresh.dynamic_emergency_endpoints.create(dynamic_emergency_address_id=office.id, callback_number="5125550142", caller_name="")
    pointers = {e.get("source", {}).get("pointer") for e in err.value.body["errors"]}
    assert {"/callback_number", "/caller_name"} <= pointers, err.value.body

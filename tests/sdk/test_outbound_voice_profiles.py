"""/v2/outbound_voice_profiles through the official `telnyx` SDK, unmodified, with an
account's key: create, list (auto-pagination and explicit page[number]), filter, sort, update,
retrieve, delete, and the SDK's error classes for 404 / 422 / 401."""

from __future__ import annotations

import asyncio

import pytest
import telnyx
from telnyx.types import OutboundVoiceProfile

from helpers import sdk_client, strict


def make(client: telnyx.Telnyx, name: str, **fields) -> OutboundVoiceProfile:
    created = client.outbound_voice_profiles.create(name=name, **fields)
    assert isinstance(created.data, OutboundVoiceProfile)
    return created.data


def test_create_with_every_field_parses_into_the_sdk_model(client: telnyx.Telnyx, unique: str):
    raw = client.outbound_voice_profiles.with_raw_response.create(
        name=f"{unique} full",
        whitelisted_destinations=["US", "GB", "DE"],
        traffic_type="conversational",
        service_plan="global",
        usage_payment_method="rate-deck",
        concurrent_call_limit=5,
        daily_spend_limit="100.00",
        daily_spend_limit_enabled=True,
        max_destination_rate=0.25,
        enabled=True,
        tags=["office", "eu"],
        billing_group_id="6a09cdc3-8948-47f0-aa62-74ac943d6c58",
        calling_window={"start_time": "08:00", "end_time": "20:00", "calls_per_cld": 3},
        call_recording={
            "call_recording_type": "by_caller_phone_number",
            "call_recording_caller_phone_numbers": ["+19705555098"],
            "call_recording_channels": "dual",
            "call_recording_format": "mp3",
        },
    )
    assert raw.status_code == 200, raw.text()  # the contract's code for this operation
    assert raw.http_request.url.path.endswith("/v2/outbound_voice_profiles")
    p = raw.parse().data
    assert isinstance(p, OutboundVoiceProfile)
    # Every field as the SDK's typed model gives it.
    assert p.id and p.id.isdigit()
    assert p.record_type == "outbound_voice_profile"
    assert p.name == f"{unique} full"
    assert p.whitelisted_destinations == ["US", "GB", "DE"]
    assert p.traffic_type == "conversational"
    assert p.service_plan == "global"
    assert p.usage_payment_method == "rate-deck"
    assert p.concurrent_call_limit == 5
    assert p.daily_spend_limit == "100.00"
    assert p.daily_spend_limit_enabled is True
    assert p.max_destination_rate == 0.25
    assert p.enabled is True
    assert p.tags == ["office", "eu"]
    assert p.billing_group_id == "6a09cdc3-8948-47f0-aa62-74ac943d6c58"
    assert p.connections_count == 0
    assert p.calling_window is not None
    assert (p.calling_window.start_time, p.calling_window.end_time, p.calling_window.calls_per_cld) == (
        "08:00",
        "20:00",
        3,
    )
    rec = p.call_recording
    assert rec is not None
    assert rec.call_recording_type == "by_caller_phone_number"
    assert rec.call_recording_caller_phone_numbers == ["+19705555098"]
    assert rec.call_recording_channels == "dual"
    assert rec.call_recording_format == "mp3"
    assert p.created_at and p.created_at.endswith("Z") and p.updated_at == p.created_at
    # And the raw JSON validates strictly against the same model (types and enumerations).
    strict(OutboundVoiceProfile, raw.json()["data"])


def test_defaults_parse(client: telnyx.Telnyx, unique: str):
    p = make(client, f"{unique} defaults")
    assert p.whitelisted_destinations == ["US", "CA"]
    assert p.traffic_type == "conversational"
    assert p.service_plan == "global"
    assert p.usage_payment_method == "rate-deck"
    assert p.enabled is True
    assert p.daily_spend_limit_enabled is False
    assert p.concurrent_call_limit is None
    assert p.billing_group_id is None
    assert p.tags == []
    assert p.call_recording is not None and p.call_recording.call_recording_type == "none"
    fetched = client.outbound_voice_profiles.with_raw_response.retrieve(p.id)
    strict(OutboundVoiceProfile, fetched.json()["data"])


def test_list_page_size_1_follows_every_page(client: telnyx.Telnyx, unique: str):
    ids = [make(client, f"{unique} page {i}").id for i in range(3)]
    only_mine = {"name": {"contains": unique}}

    # Auto-pagination: iterating the page object fetches page[number]=2, 3, ... by itself,
    # keeping page[size] and the filter.
    seen = list(client.outbound_voice_profiles.list(page_size=1, filter=only_mine))
    assert sorted(p.id for p in seen) == sorted(ids)
    stamps = [p.created_at for p in seen]
    assert stamps == sorted(stamps, reverse=True), "the default sort is -created_at"

    # The same, page by page with the SDK's helpers.
    page = client.outbound_voice_profiles.list(page_size=1, filter=only_mine, sort="name")
    walked = []
    while True:
        assert len(page.data) == 1
        assert page.meta is not None and page.meta.total_pages == 3 and page.meta.total_results == 3
        walked.extend(p.id for p in page.data)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert walked == ids, "sort=name ascending: page 0, page 1, page 2"

    # Explicit page[number].
    explicit = []
    for n in (1, 2, 3):
        page = client.outbound_voice_profiles.list(page_number=n, page_size=1, filter=only_mine, sort="name")
        assert page.meta.page_number == n and page.meta.page_size == 1
        explicit.extend(p.id for p in page.data)
    assert explicit == ids
    past_end = client.outbound_voice_profiles.list(page_number=4, page_size=1, filter=only_mine)
    assert past_end.data == [] and not past_end.has_next_page()

    # Unfiltered, the account's whole list walks the same way and includes ours once each.
    everything = [p.id for p in client.outbound_voice_profiles.list(page_size=1)]
    assert len(everything) == len(set(everything))
    assert set(ids) <= set(everything)
    first = client.outbound_voice_profiles.list(page_size=1)
    assert first.meta.total_results == len(everything)


def test_filter_name_contains(client: telnyx.Telnyx, unique: str):
    a = make(client, f"{unique} Alpha Office")
    b = make(client, f"{unique} beta office")
    make(client, f"{unique} gamma")
    found = client.outbound_voice_profiles.list(filter={"name": {"contains": f"{unique} alpha"}})
    assert [p.id for p in found.data] == [a.id]
    found = client.outbound_voice_profiles.list(filter={"name": {"contains": "OFFICE"}}, sort="name")
    mine = [p.id for p in found if p.name.startswith(unique)]
    assert mine == [a.id, b.id], "contains is case-insensitive"
    none = client.outbound_voice_profiles.list(filter={"name": {"contains": f"{unique}-nothing"}})
    assert none.data == [] and none.meta.total_results == 0


def test_update_then_retrieve(client: telnyx.Telnyx, unique: str):
    p = make(client, f"{unique} before", tags=["keep"])
    updated = client.outbound_voice_profiles.update(
        p.id,
        name=f"{unique} after",
        whitelisted_destinations=["DE", "FR"],
        enabled=False,
        concurrent_call_limit=2,
        calling_window={"start_time": "09:00"},
    ).data
    assert isinstance(updated, OutboundVoiceProfile)
    assert updated.id == p.id
    assert updated.name == f"{unique} after"
    assert updated.whitelisted_destinations == ["DE", "FR"]
    assert updated.enabled is False
    assert updated.concurrent_call_limit == 2
    assert updated.tags == ["keep"], "fields not sent stay"
    assert updated.created_at == p.created_at and updated.updated_at >= p.updated_at
    got = client.outbound_voice_profiles.retrieve(p.id).data
    assert got.to_dict() == updated.to_dict()
    assert got.calling_window is not None and got.calling_window.start_time == "09:00"
    # Null clears a nullable field.
    cleared = client.outbound_voice_profiles.update(p.id, name=f"{unique} after", concurrent_call_limit=None).data
    assert cleared.concurrent_call_limit is None


def test_delete_then_not_found(client: telnyx.Telnyx, unique: str):
    p = make(client, f"{unique} doomed")
    deleted = client.outbound_voice_profiles.delete(p.id)
    assert deleted.data is not None and deleted.data.id == p.id and deleted.data.name == p.name
    with pytest.raises(telnyx.NotFoundError) as e:
        client.outbound_voice_profiles.retrieve(p.id)
    assert e.value.status_code == 404
    assert e.value.body["errors"][0]["code"] == "10005"
    with pytest.raises(telnyx.NotFoundError):
        client.outbound_voice_profiles.update(p.id, name=f"{unique} ghost")
    with pytest.raises(telnyx.NotFoundError):
        client.outbound_voice_profiles.delete(p.id)
    assert client.outbound_voice_profiles.list(filter={"name": {"contains": unique}}).data == []


def test_invalid_values_raise_unprocessable_entity(client: telnyx.Telnyx, unique: str):
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.outbound_voice_profiles.create(name="ab", whitelisted_destinations=["USA"])
    pointers = {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}
    assert {"/name", "/whitelisted_destinations/0"} <= pointers or {"/name"} <= pointers, e.value.body
    assert all(err["code"] in ("10015", "10032") for err in e.value.body["errors"])
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.outbound_voice_profiles.create(name=f"{unique} bad", traffic_type="robocall")  # type: ignore[arg-type]
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.outbound_voice_profiles.list(page_size=251)


def test_wrong_key_raises_authentication_error(base_url: str):
    with sdk_client(base_url, "KEYnot-a-real-key") as bad:
        with pytest.raises(telnyx.AuthenticationError) as e:
            bad.outbound_voice_profiles.list()
    assert e.value.status_code == 401
    assert e.value.body["errors"][0]["code"] == "10009"


def test_async_client_auto_pagination(base_url: str, account_key: str, unique: str):
    async def run() -> tuple[list[str], list[str]]:
        async with telnyx.AsyncTelnyx(api_key=account_key, base_url=base_url, max_retries=0, timeout=10) as c:
            made = []
            for i in range(2):
                made.append((await c.outbound_voice_profiles.create(name=f"{unique} async {i}")).data.id)
            pages = c.outbound_voice_profiles.list(page_size=1, filter={"name": {"contains": unique}})
            seen = [p.id async for p in pages]
            for pid in made:
                await c.outbound_voice_profiles.delete(pid)
            return made, seen

    made, seen = asyncio.run(run())
    assert sorted(seen) == sorted(made)

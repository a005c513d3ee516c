"""/v2/uac_connections through the official `telnyx` SDK: what UAC connections have of their own
(the platform registers toward the customer's PBX): `external_uac_settings` with its password
shown only by the request that sets it, `internal_uac_settings`, the optional SIP credentials,
and the `check_registration_status` action. The shared walk is in test_connections.py."""

from __future__ import annotations

import uuid

import pytest
import telnyx
from telnyx.types import UacConnection, UacConnectionCreateResponse, UacConnectionRetrieveResponse
from telnyx.types.uac_connections import ActionCheckRegistrationStatusResponse

from helpers import strict
from test_connections import sip_user


def test_external_settings_and_registration_status(client: telnyx.Telnyx, unique: str):
    trunk_user = "pbx-" + uuid.uuid4().hex[:8]
    raw = client.uac_connections.with_raw_response.create(
        connection_name=f"{unique} FreePBX",
        external_uac_settings={
            "proxy": "pbx.customer.example.com:5060",
            "username": trunk_user,
            "password": "Trunk-Secret-99",
            "auth_username": "auth100",
            "from_user": "100",
            "outbound_proxy": "192.0.2.50:5070",
            "transport": "TCP",
            "expiration_sec": 600,
        },
        internal_uac_settings={"destination_uri": "reception@sip.example.com"},
    )
    assert raw.status_code == 201, raw.text()
    strict(UacConnectionCreateResponse, raw.json())
    c = raw.parse().data
    assert isinstance(c, UacConnection)
    assert c.record_type == "uac_connection"
    assert c.authentication == "uac-authentication"
    assert c.fqdn_outbound_authentication == "credential-authentication"
    assert c.fqdns == []
    assert c.registration_status is None
    ext = c.external_uac_settings
    assert ext is not None
    assert (ext.proxy, ext.username, ext.auth_username, ext.from_user) == (
        "pbx.customer.example.com:5060",
        trunk_user,
        "auth100",
        "100",
    )
    assert (ext.outbound_proxy, ext.transport, ext.expiration_sec) == ("192.0.2.50:5070", "TCP", 600)
    assert ext.password == "Trunk-Secret-99", "shown by the request that sets it"
    assert c.internal_uac_settings is not None
    assert c.internal_uac_settings.destination_uri == "reception@sip.example.com"

    got = client.uac_connections.with_raw_response.retrieve(c.id)
    assert got.status_code == 200, got.text()
    strict(UacConnectionRetrieveResponse, got.json())
    shown = got.parse().data.external_uac_settings
    assert shown.password in (None, ""), "never shown again"
    assert shown.username == trunk_user

    # A partial update merges into external_uac_settings.
    u = client.uac_connections.update(c.id, external_uac_settings={"expiration_sec": 1200, "transport": "TLS"}).data
    assert (u.external_uac_settings.expiration_sec, u.external_uac_settings.transport) == (1200, "TLS")
    assert u.external_uac_settings.proxy == "pbx.customer.example.com:5060"

    raw = client.uac_connections.actions.with_raw_response.check_registration_status(c.id)
    assert raw.status_code == 200, raw.text()
    assert raw.http_request.method == "POST"
    assert raw.http_request.url.path.endswith(f"/v2/uac_connections/{c.id}/actions/check_registration_status")
    strict(ActionCheckRegistrationStatusResponse, raw.json())
    status = raw.parse().data
    assert status.record_type == "registration_status"
    assert status.status == "Not Registered"
    assert status.sip_username == trunk_user
    with pytest.raises(telnyx.NotFoundError):
        client.uac_connections.actions.check_registration_status("1234567890123456789")


def test_optional_sip_credentials_go_together(client: telnyx.Telnyx, unique: str):
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.uac_connections.create(connection_name=f"{unique} half", user_name=sip_user())
    user = sip_user()
    c = client.uac_connections.create(connection_name=f"{unique} creds", user_name=user, password="uac-password-1").data
    assert c.user_name == user and c.password == "uac-password-1"
    assert client.uac_connections.retrieve(c.id).data.password in (None, "")
    # The SIP user name is unique with every other SIP user name (credential connections too).
    with pytest.raises(telnyx.UnprocessableEntityError) as e:
        client.credential_connections.create(connection_name=f"{unique} clash", user_name=user, password="clash-password-1")
    assert "/user_name" in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}


def test_bad_external_settings_are_unprocessable(client: telnyx.Telnyx, unique: str):
    for bad in (
        {"proxy": "not a host"},
        {"username": "-bad"},
        {"transport": "SCTP"},
        {"expiration_sec": 0},
    ):
        with pytest.raises(telnyx.UnprocessableEntityError) as e:
            client.uac_connections.create(connection_name=f"{unique} bad", external_uac_settings=bad)  # type: ignore[arg-type]
        pointer = "/external_uac_settings/" + next(iter(bad))
        assert pointer in {err.get("source", {}).get("pointer") for err in e.value.body["errors"]}, (bad, e.value.body)
    with pytest.raises(telnyx.UnprocessableEntityError):
        client.uac_connections.create(connection_name=f"{unique} bad", internal_uac_settings={"destination_uri": "sip:a@b c"})

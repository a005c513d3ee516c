"""The operator's endpoints (/v2/accounts, not in the contract) over plain HTTP, the contract's
401 body, and tenant isolation between two accounts' keys (plain HTTP and the SDK alike)."""

from __future__ import annotations

import pytest
import telnyx

from helpers import Http, sdk_client


def test_operator_creates_an_account_and_its_key_works(http: Http, admin_key: str, unique: str, new_account):
    account_id, key = new_account(f"{unique} Acme")
    assert key.startswith("KEY") and len(key) > 32
    r = http.request("GET", f"/accounts/{account_id}", admin_key)
    assert r.status == 200, r.text
    acct = r.body["data"]
    assert acct["id"] == account_id and acct["name"] == f"{unique} Acme" and acct["record_type"] == "account"
    assert "api_key" not in acct, "the key is shown once, on create"
    # The new key is a Bearer key for the account: it sees itself only.
    r = http.request("GET", "/accounts", key)
    assert r.status == 200, r.text
    assert [a["id"] for a in r.body["data"]] == [account_id] and r.body["meta"]["total_results"] == 1
    # The operator finds it by name, and can change it.
    r = http.request("GET", "/accounts", admin_key, query={"filter[name][contains]": unique})
    assert [a["id"] for a in r.body["data"]] == [account_id]
    r = http.request("PATCH", f"/accounts/{account_id}", admin_key, {"concurrent_call_limit": 3})
    assert r.status == 200 and r.body["data"]["concurrent_call_limit"] == 3, r.text


def test_no_key_or_a_wrong_key_is_401_with_code_10009(http: Http):
    for key in (None, "KEYwrong"):
        for method, path in (("GET", "/accounts"), ("POST", "/accounts"), ("GET", "/outbound_voice_profiles")):
            r = http.request(method, path, key, {"name": "x"} if method == "POST" else None)
            assert r.status == 401, (method, path, r.text)
            err = r.body["errors"][0]
            assert err["code"] == "10009", r.text
            assert err["title"] and err["detail"]


def test_an_account_key_cannot_use_operator_endpoints(http: Http, new_account):
    account_id, key = new_account()
    r = http.request("POST", "/accounts", key, {"name": "sneaky"})
    assert r.status == 403, r.text
    assert r.body["errors"][0]["code"] == "10010"
    r = http.request("PATCH", f"/accounts/{account_id}", key, {"concurrent_call_limit": 1000})
    assert r.status == 403, r.text


def test_tenant_isolation(http: Http, base_url: str, admin_key: str, unique: str, new_account):
    a_id, a_key = new_account()
    b_id, b_key = new_account()
    r = http.request("POST", "/outbound_voice_profiles", a_key, {"name": f"{unique} A's"})
    assert r.status == 200, r.text
    profile = r.body["data"]["id"]

    # B's key: A's profile does not exist, whatever the method.
    for method, body in (("GET", None), ("PATCH", {"name": f"{unique} taken"}), ("DELETE", None)):
        r = http.request(method, f"/outbound_voice_profiles/{profile}", b_key, body)
        assert r.status == 404, (method, r.text)
        assert r.body["errors"][0]["code"] == "10005"
    r = http.request("GET", "/outbound_voice_profiles", b_key)
    assert profile not in [p["id"] for p in r.body["data"]]
    r = http.request("GET", f"/accounts/{a_id}", b_key)
    assert r.status == 404, r.text

    # The same through the SDK with B's key.
    with sdk_client(base_url, b_key) as b:
        with pytest.raises(telnyx.NotFoundError):
            b.outbound_voice_profiles.retrieve(profile)
        assert b.outbound_voice_profiles.list().data == []

    # A still has it, untouched; the operator sees it with its owner.
    with sdk_client(base_url, a_key) as a:
        assert a.outbound_voice_profiles.retrieve(profile).data.name == f"{unique} A's"
    r = http.request("GET", f"/outbound_voice_profiles/{profile}", admin_key)
    assert r.status == 200 and r.body["data"]["account_id"] == a_id, r.text
    r = http.request("GET", "/outbound_voice_profiles", admin_key, query={"filter[account_id]": b_id})
    assert r.body["data"] == [], r.text


def test_deleting_an_account_revokes_its_key(http: Http, admin_key: str, new_account):
    account_id, key = new_account()
    assert http.request("GET", "/outbound_voice_profiles", key).status == 200
    r = http.request("DELETE", f"/accounts/{account_id}", admin_key)
    assert r.status == 200, r.text
    r = http.request("GET", "/outbound_voice_profiles", key)
    assert r.status == 401, r.text
    assert http.request("GET", f"/accounts/{account_id}", admin_key).status == 404

"""The operator's endpoints over plain HTTP (urllib): /v2/accounts, /v2/carriers and
/v2/phone_numbers create/delete (not in the contract, so the SDK has no client for them), and
tenant isolation: account B's key on every kind of account A's resources answers 404 (plain
HTTP and the SDK alike), and B cannot point its own resources at A's."""

from __future__ import annotations

import random
import uuid

import pytest
import telnyx

from helpers import Http, sdk_client


def pointers(body: dict) -> set:
    return {e.get("source", {}).get("pointer") for e in body.get("errors", [])}


def random_number() -> str:
    return "+1646" + "".join(random.choice("0123456789") for _ in range(7))


# ---------------------------------------------------------------------------------------------
# /v2/accounts


def test_accounts_crud_and_pages(http: Http, admin_key: str, unique: str):
    made = []
    try:
        for i in range(3):
            r = http.request("POST", "/accounts", admin_key, {"name": f"{unique} tenant {i}", "concurrent_call_limit": 5 + i})
            assert r.status == 201, r.text
            a = r.body["data"]
            assert a["record_type"] == "account" and a["id"].isdigit()
            assert a["concurrent_call_limit"] == 5 + i and a["enabled"] is True
            assert a["api_key"].startswith("KEY")
            made.append(a["id"])

        # page[size]=1, every page, through meta.total_pages.
        q = {"filter[name][contains]": unique.upper(), "page[size]": 1}
        first = http.request("GET", "/accounts", admin_key, query=q)
        assert first.status == 200, first.text
        meta = first.body["meta"]
        assert (meta["total_pages"], meta["total_results"], meta["page_size"], meta["page_number"]) == (3, 3, 1, 1)
        seen = []
        for n in range(1, meta["total_pages"] + 1):
            r = http.request("GET", "/accounts", admin_key, query=dict(q, **{"page[number]": n}))
            assert r.status == 200 and len(r.body["data"]) == 1, r.text
            seen.extend(a["id"] for a in r.body["data"])
        assert sorted(seen) == sorted(made)
        assert http.request("GET", "/accounts", admin_key, query=dict(q, **{"page[number]": 4})).body["data"] == []
        assert http.request("GET", "/accounts", admin_key, query={"page[size]": 0}).status in (400, 422)

        r = http.request("PATCH", f"/accounts/{made[0]}", admin_key, {"name": f"{unique} renamed", "enabled": False})
        assert r.status == 200, r.text
        assert r.body["data"]["name"] == f"{unique} renamed" and r.body["data"]["enabled"] is False
        assert "api_key" not in r.body["data"]
        r = http.request("PATCH", f"/accounts/{made[0]}", admin_key, {"concurrent_call_limit": -1})
        assert r.status == 422 and "/concurrent_call_limit" in pointers(r.body), r.text
        r = http.request("POST", "/accounts", admin_key, {"name": ""})
        assert r.status == 422 and "/name" in pointers(r.body), r.text

        r = http.request("DELETE", f"/accounts/{made[0]}", admin_key)
        assert r.status == 200 and r.body["data"]["id"] == made[0], r.text
        assert http.request("GET", f"/accounts/{made[0]}", admin_key).status == 404
        assert http.request("DELETE", f"/accounts/{made[0]}", admin_key).status == 404
        assert http.request("PATCH", f"/accounts/{made[0]}", admin_key, {"name": "x"}).status == 404
    finally:
        for a in made:
            http.request("DELETE", f"/accounts/{a}", admin_key)


# ---------------------------------------------------------------------------------------------
# /v2/carriers


def carrier_body(unique: str, name: str) -> dict:
    block = f"100.{random.randrange(64, 128)}.{random.randrange(256)}.0/24"
    return {
        "name": f"{unique} {name}",
        "gateways": [
            {"host": "sip.carrier.example.net"},
            {"host": "[2001:db8::5]", "port": 5080, "transport": "TCP", "priority": 2, "weight": 5},
            {"host": "198.51.100.40", "transport": "TLS"},
        ],
        "routing": "round-robin",
        "priority": 3,
        "prefixes": ["1", "44"],
        "inbound_ips": [block, "2001:db8:%x::/48" % random.randrange(0x10000)],
        "username": "trunk" + uuid.uuid4().hex[:6],
        "password": "Carrier-Secret-7",
        "tech_prefix": "9911",
    }


def test_carriers_crud_pages_and_filters(http: Http, admin_key: str, account_key: str, unique: str):
    made = []
    try:
        body = carrier_body(unique, "Upstream A")
        r = http.request("POST", "/carriers", admin_key, body)
        assert r.status == 201, r.text
        c = r.body["data"]
        made.append(c["id"])
        assert c["record_type"] == "carrier" and c["id"].isdigit()
        assert c["name"] == body["name"] and c["routing"] == "round-robin" and c["priority"] == 3
        assert c["gateways"] == [
            {"host": "sip.carrier.example.net", "port": 5060, "transport": "UDP", "priority": 1, "weight": 1},
            {"host": "2001:db8::5", "port": 5080, "transport": "TCP", "priority": 2, "weight": 5},
            {"host": "198.51.100.40", "port": 5061, "transport": "TLS", "priority": 1, "weight": 1},
        ]
        assert c["prefixes"] == ["1", "44"] and c["inbound_ips"] == body["inbound_ips"]
        assert c["username"] == body["username"] and c["tech_prefix"] == "9911" and c["enabled"] is True
        assert "password" not in c, "never returned"

        r = http.request("GET", f"/carriers/{c['id']}", admin_key)
        assert r.status == 200 and r.body["data"] == c, r.text

        for name in ("Upstream B", "upstream c"):
            r = http.request("POST", "/carriers", admin_key, carrier_body(unique, name) | {"priority": len(made) + 5})
            assert r.status == 201, r.text
            made.append(r.body["data"]["id"])

        q = {"filter[name][contains]": f"{unique} UPSTREAM", "page[size]": 1, "sort": "name"}
        first = http.request("GET", "/carriers", admin_key, query=q)
        assert first.status == 200, first.text
        assert first.body["meta"]["total_pages"] == 3 and first.body["meta"]["total_results"] == 3
        walked = []
        for n in (1, 2, 3):
            r = http.request("GET", "/carriers", admin_key, query=dict(q, **{"page[number]": n}))
            walked.extend(x["id"] for x in r.body["data"])
        assert walked == made
        r = http.request("GET", "/carriers", admin_key, query={"filter[name][contains]": unique, "sort": "-priority"})
        assert [x["id"] for x in r.body["data"]] == list(reversed(made))
        r = http.request("GET", "/carriers", admin_key, query={"sort": "cost"})
        assert r.status == 400, r.text

        # PATCH: given fields change, gateways are replaced, null resets.
        r = http.request(
            "PATCH",
            f"/carriers/{c['id']}",
            admin_key,
            {"gateways": [{"host": "edge.carrier.example.net", "port": 5070}], "enabled": False, "tech_prefix": None},
        )
        assert r.status == 200, r.text
        u = r.body["data"]
        assert u["gateways"] == [{"host": "edge.carrier.example.net", "port": 5070, "transport": "UDP", "priority": 1, "weight": 1}]
        assert u["enabled"] is False and u.get("tech_prefix") is None
        assert u["name"] == c["name"] and u["created_at"] == c["created_at"]
        r = http.request("GET", "/carriers", admin_key, query={"filter[name][contains]": unique, "filter[enabled]": "false"})
        assert [x["id"] for x in r.body["data"]] == [c["id"]]

        # Refusals.
        r = http.request("POST", "/carriers", admin_key, {"name": f"{unique} none", "gateways": []})
        assert r.status == 422 and "/gateways" in pointers(r.body), r.text
        r = http.request("POST", "/carriers", admin_key, {"name": f"{unique} half", "gateways": [{"host": "a.example.net"}], "username": "only"})
        assert r.status == 422 and "/password" in pointers(r.body), r.text
        r = http.request("POST", "/carriers", admin_key, {"name": f"{unique} overlap", "gateways": [{"host": "b.example.net"}], "inbound_ips": [body["inbound_ips"][0]]})
        assert r.status == 422 and "/inbound_ips/0" in pointers(r.body), r.text
        r = http.request("POST", "/carriers", admin_key, {"name": f"{unique} dup", "gateways": [{"host": "C.example.net"}, {"host": "c.example.net"}]})
        assert r.status == 422 and "/gateways/1/host" in pointers(r.body), r.text

        # An account's key gets 403 on every carrier route.
        for method, path, b in (
            ("GET", "/carriers", None),
            ("POST", "/carriers", carrier_body(unique, "sneaky")),
            ("GET", f"/carriers/{c['id']}", None),
            ("PATCH", f"/carriers/{c['id']}", {"enabled": True}),
            ("DELETE", f"/carriers/{c['id']}", None),
        ):
            r = http.request(method, path, account_key, b)
            assert r.status == 403, (method, path, r.text)
            assert r.body["errors"][0]["code"] == "10010"

        r = http.request("DELETE", f"/carriers/{c['id']}", admin_key)
        assert r.status == 200 and r.body["data"]["id"] == c["id"] and "password" not in r.body["data"], r.text
        assert http.request("GET", f"/carriers/{c['id']}", admin_key).status == 404
        assert http.request("PATCH", f"/carriers/{c['id']}", admin_key, {"enabled": True}).status == 404
        assert http.request("DELETE", f"/carriers/{c['id']}", admin_key).status == 404
    finally:
        for cid in made:
            http.request("DELETE", f"/carriers/{cid}", admin_key)


# ---------------------------------------------------------------------------------------------
# /v2/phone_numbers (operator create/delete; the account reads and points its numbers)


def test_phone_numbers_operator_create_and_delete(http: Http, admin_key: str, base_url: str, unique: str, new_account):
    a_id, a_key = new_account()
    b_id, _ = new_account()
    number = random_number()

    # Only the operator adds numbers.
    r = http.request("POST", "/phone_numbers", a_key, {"phone_number": number, "account_id": a_id})
    assert r.status == 403, r.text
    r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": number})
    assert r.status == 422 and "/account_id" in pointers(r.body), r.text
    r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": number, "account_id": "1234567890123456789"})
    assert r.status == 422 and "/account_id" in pointers(r.body), r.text
    for bad in ("3125550100", "+0125550100", "+1", "+1312555010012345"):
        r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": bad, "account_id": a_id})
        assert r.status == 422 and "/phone_number" in pointers(r.body), (bad, r.text)

    r = http.request(
        "POST",
        "/phone_numbers",
        admin_key,
        {"phone_number": number, "account_id": a_id, "tags": ["main"], "customer_reference": f"{unique}-main"},
    )
    assert r.status == 201, r.text
    n = r.body["data"]
    assert n["record_type"] == "phone_number" and n["phone_number"] == number and n["status"] == "active"
    assert n["account_id"] == a_id and n["connection_id"] is None and n["tags"] == ["main"]
    assert n["customer_reference"] == f"{unique}-main" and n["purchased_at"]

    # Unique on the platform.
    for owner in (a_id, b_id):
        r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": number, "account_id": owner})
        assert r.status == 422 and "/phone_number" in pointers(r.body), r.text

    # The account sees it (without account_id), reads its voice settings through the SDK, and
    # cannot delete it.
    r = http.request("GET", f"/phone_numbers/{n['id']}", a_key)
    assert r.status == 200 and r.body["data"]["phone_number"] == number and "account_id" not in r.body["data"], r.text
    r = http.request("GET", "/phone_numbers", a_key)
    assert [x["id"] for x in r.body["data"]] == [n["id"]]
    with sdk_client(base_url, a_key) as a:
        assert a.phone_numbers.voice.retrieve(n["id"]).data.phone_number == number
        assert [v.id for v in a.phone_numbers.voice.list()] == [n["id"]]
    r = http.request("DELETE", f"/phone_numbers/{n['id']}", a_key)
    assert r.status == 403, r.text
    r = http.request("PATCH", f"/phone_numbers/{n['id']}", a_key, {"phone_number": random_number()})
    assert r.status == 422, r.text

    r = http.request("GET", "/phone_numbers", admin_key, query={"filter[account_id]": a_id})
    assert [x["id"] for x in r.body["data"]] == [n["id"]]
    assert http.request("GET", "/phone_numbers", admin_key, query={"filter[account_id]": b_id}).body["data"] == []

    r = http.request("DELETE", f"/phone_numbers/{n['id']}", admin_key)
    assert r.status == 200 and r.body["data"]["id"] == n["id"], r.text
    assert http.request("GET", f"/phone_numbers/{n['id']}", admin_key).status == 404
    assert http.request("GET", f"/phone_numbers/{n['id']}/voice", a_key).status == 404
    assert http.request("DELETE", f"/phone_numbers/{n['id']}", admin_key).status == 404
    # Deleting frees the number for another account.
    r = http.request("POST", "/phone_numbers", admin_key, {"phone_number": number, "account_id": b_id})
    assert r.status == 201, r.text
    http.request("DELETE", f"/phone_numbers/{r.body['data']['id']}", admin_key)


# ---------------------------------------------------------------------------------------------
# Tenant isolation: B's key on A's ids.


def test_tenant_isolation_for_every_resource_kind(http: Http, admin_key: str, base_url: str, unique: str, new_account):
    a_id, a_key = new_account()
    b_id, b_key = new_account()

    def post(path: str, body: dict, key: str = a_key) -> dict:
        r = http.request("POST", path, key, body)
        assert r.status in (200, 201), (path, r.text)
        return r.body["data"]

    ovp = post("/outbound_voice_profiles", {"name": f"{unique} A profile"})
    cred = post(
        "/credential_connections",
        {"connection_name": f"{unique} A cred", "user_name": "a" + uuid.uuid4().hex[:12], "password": "a-password-1",
         "outbound": {"outbound_voice_profile_id": ovp["id"]}},
    )
    ipc = post("/ip_connections", {"connection_name": f"{unique} A ip"})
    ip = post("/ips", {"connection_id": ipc["id"], "ip_address": "192.0.2.77"})
    fqc = post("/fqdn_connections", {"connection_name": f"{unique} A fqdn"})
    fq = post("/fqdns", {"connection_id": fqc["id"], "fqdn": f"pbx.{unique}.example.org", "dns_record_type": "a"})
    uac = post("/uac_connections", {"connection_name": f"{unique} A uac"})
    addr = post(
        "/dynamic_emergency_addresses",
        {"house_number": "1", "street_name": "Main", "locality": "Springfield", "administrative_area": "IL",
         "postal_code": "62701", "country_code": "US"},
    )
    endpoint = post(
        "/dynamic_emergency_endpoints",
        {"dynamic_emergency_address_id": addr["id"], "callback_number": "+12175550100", "caller_name": "A desk"},
    )
    num = post("/phone_numbers", {"phone_number": random_number(), "account_id": a_id}, key=admin_key)
    r = http.request("PATCH", f"/phone_numbers/{num['id']}", a_key, {"connection_id": cred["id"]})
    assert r.status == 200, r.text

    patches = {
        "outbound_voice_profiles": {"name": f"{unique} taken"},
        "credential_connections": {"connection_name": f"{unique} taken"},
        "ip_connections": {"connection_name": f"{unique} taken"},
        "fqdn_connections": {"connection_name": f"{unique} taken"},
        "uac_connections": {"connection_name": f"{unique} taken"},
        "ips": {"ip_address": "192.0.2.78"},
        "fqdns": {"port": 5070},
        "phone_numbers": {"tags": ["taken"]},
    }
    resources = {
        "outbound_voice_profiles": ovp["id"],
        "credential_connections": cred["id"],
        "ip_connections": ipc["id"],
        "fqdn_connections": fqc["id"],
        "uac_connections": uac["id"],
        "ips": ip["id"],
        "fqdns": fq["id"],
        "dynamic_emergency_addresses": addr["id"],
        "dynamic_emergency_endpoints": endpoint["id"],
        "phone_numbers": num["id"],
    }
    for path, rid in resources.items():
        methods = [("GET", None), ("DELETE", None)]
        if path in patches:
            methods.append(("PATCH", patches[path]))
        for method, body in methods:
            r = http.request(method, f"/{path}/{rid}", b_key, body)
            assert r.status == 404, (method, path, r.text)
            assert r.body["errors"][0]["code"] == "10005", r.text
        r = http.request("GET", f"/{path}", b_key)
        assert r.status == 200, (path, r.text)
        assert rid not in [x["id"] for x in r.body["data"]], path
    for path in (
        f"/connections/{cred['id']}",
        f"/connections/{ipc['id']}",
        f"/connections/{fqc['id']}",
        f"/connections/{uac['id']}",
        f"/connections/{cred['id']}/active_calls",
        f"/phone_numbers/{num['id']}/voice",
        f"/accounts/{a_id}",
    ):
        r = http.request("GET", path, b_key)
        assert r.status == 404, (path, r.text)
    r = http.request("PATCH", f"/phone_numbers/{num['id']}/voice", b_key, {"tech_prefix_enabled": True})
    assert r.status == 404, r.text
    for path in (f"/credential_connections/{cred['id']}", f"/uac_connections/{uac['id']}"):
        r = http.request("POST", f"{path}/actions/check_registration_status", b_key)
        assert r.status == 404, (path, r.text)
    assert http.request("GET", "/connections", b_key).body["data"] == []
    assert http.request("GET", "/phone_numbers/voice", b_key).body["data"] == []

    # B cannot point its own resources at A's.
    b_ipc = post("/ip_connections", {"connection_name": f"{unique} B ip"}, key=b_key)
    b_fqc = post("/fqdn_connections", {"connection_name": f"{unique} B fqdn"}, key=b_key)
    for path, body, pointer in (
        ("/ips", {"connection_id": ipc["id"], "ip_address": "192.0.2.79"}, "/connection_id"),
        ("/fqdns", {"connection_id": fqc["id"], "fqdn": f"b.{unique}.example.org", "dns_record_type": "a"}, "/connection_id"),
        ("/dynamic_emergency_endpoints", {"dynamic_emergency_address_id": addr["id"], "callback_number": "+12175550101", "caller_name": "B"}, "/dynamic_emergency_address_id"),
        ("/uac_connections", {"connection_name": f"{unique} B uac", "outbound": {"outbound_voice_profile_id": ovp["id"]}}, "/outbound/outbound_voice_profile_id"),
    ):
        r = http.request("POST", path, b_key, body)
        assert r.status == 422 and pointer in pointers(r.body), (path, r.text)
    r = http.request("PATCH", f"/ips/{ip['id']}", a_key, {"ip_address": "192.0.2.77", "connection_id": b_ipc["id"]})
    assert r.status == 422 and "/connection_id" in pointers(r.body), r.text
    r = http.request("PATCH", f"/fqdns/{fq['id']}", a_key, {"connection_id": b_fqc["id"]})
    assert r.status == 422 and "/connection_id" in pointers(r.body), r.text
    b_num = post("/phone_numbers", {"phone_number": random_number(), "account_id": b_id}, key=admin_key)
    r = http.request("PATCH", f"/phone_numbers/{b_num['id']}", b_key, {"connection_id": cred["id"]})
    assert r.status == 422 and "/connection_id" in pointers(r.body), r.text

    # The same through the SDK with B's key: NotFoundError for every kind.
    with sdk_client(base_url, b_key) as b:
        for call in (
            lambda: b.outbound_voice_profiles.retrieve(ovp["id"]),
            lambda: b.credential_connections.retrieve(cred["id"]),
            lambda: b.credential_connections.update(cred["id"], connection_name=f"{unique} taken"),
            lambda: b.credential_connections.delete(cred["id"]),
            lambda: b.credential_connections.actions.check_registration_status(cred["id"]),
            lambda: b.ip_connections.retrieve(ipc["id"]),
            lambda: b.ip_connections.delete(ipc["id"]),
            lambda: b.ips.retrieve(ip["id"]),
            lambda: b.ips.update(ip["id"], ip_address="192.0.2.80"),
            lambda: b.ips.delete(ip["id"]),
            lambda: b.fqdn_connections.retrieve(fqc["id"]),
            lambda: b.fqdn_connections.update(fqc["id"], active=False),
            lambda: b.fqdns.retrieve(fq["id"]),
            lambda: b.fqdns.delete(fq["id"]),
            lambda: b.uac_connections.retrieve(uac["id"]),
            lambda: b.uac_connections.actions.check_registration_status(uac["id"]),
            lambda: b.connections.retrieve(cred["id"]),
            lambda: b.connections.list_active_calls(cred["id"]),
            lambda: b.dynamic_emergency_addresses.retrieve(addr["id"]),
            lambda: b.dynamic_emergency_addresses.delete(addr["id"]),
            lambda: b.dynamic_emergency_endpoints.retrieve(endpoint["id"]),
            lambda: b.dynamic_emergency_endpoints.delete(endpoint["id"]),
            lambda: b.phone_numbers.voice.retrieve(num["id"]),
            lambda: b.phone_numbers.voice.update(num["id"], tech_prefix_enabled=True),
            lambda: b.phone_numbers.update(num["id"], connection_id=b_ipc["id"]),
        ):
            with pytest.raises(telnyx.NotFoundError):
                call()
        assert {c.id for c in b.connections.list()} == {b_ipc["id"], b_fqc["id"]}
        assert b.ips.list(filter={"connection_id": ipc["id"]}).data == []
        assert b.fqdns.list(filter={"connection_id": fqc["id"]}).data == []

    # A's resources are untouched; the operator sees them with their owner.
    with sdk_client(base_url, a_key) as a:
        assert a.credential_connections.retrieve(cred["id"]).data.connection_name == f"{unique} A cred"
        assert a.ips.retrieve(ip["id"]).data.ip_address == "192.0.2.77"
        assert a.fqdns.retrieve(fq["id"]).data.port == 5060
        assert a.phone_numbers.voice.retrieve(num["id"]).data.connection_id == cred["id"]
        assert a.phone_numbers.voice.retrieve(num["id"]).data.tech_prefix_enabled is False
        assert len(a.connections.list().data) == 4
    for path, rid in resources.items():
        r = http.request("GET", f"/{path}/{rid}", admin_key)
        assert r.status == 200, (path, r.text)
        assert r.body["data"].get("account_id") == a_id, (path, r.text)
    http.request("DELETE", f"/phone_numbers/{num['id']}", admin_key)
    http.request("DELETE", f"/phone_numbers/{b_num['id']}", admin_key)

"""Fixtures shared by the SDK tests: where the server is, the keys, an official `telnyx` client,
a plain-HTTP client and throwaway accounts.

Environment (set by crates/opentrunk/tests/sdk.rs, or by hand against any running server):

- OPENTRUNK_BASE_URL     the API base with /v2, e.g. http://127.0.0.1:8080/v2
- OPENTRUNK_ACCOUNT_KEY  an account's Bearer key (the SDK's api_key)
- OPENTRUNK_ADMIN_KEY    the operator key (operator endpoints, throwaway accounts)
"""

from __future__ import annotations

import os
import uuid
from typing import Optional

import pytest
import telnyx

from helpers import Http, sdk_client


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set; see tests/sdk/README.md", pytrace=False)
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _env("OPENTRUNK_BASE_URL").rstrip("/")


@pytest.fixture(scope="session")
def account_key() -> str:
    return _env("OPENTRUNK_ACCOUNT_KEY")


@pytest.fixture(scope="session")
def admin_key() -> str:
    return _env("OPENTRUNK_ADMIN_KEY")


@pytest.fixture(scope="session")
def client(base_url: str, account_key: str) -> telnyx.Telnyx:
    """The official SDK client with the account's key."""
    c = sdk_client(base_url, account_key)
    yield c
    c.close()


@pytest.fixture(scope="session")
def http(base_url: str) -> Http:
    return Http(base_url)


@pytest.fixture
def unique() -> str:
    """A name fragment no other test uses, so list filters can scope to one test's data."""
    return "sdk-" + uuid.uuid4().hex[:12]


@pytest.fixture
def new_account(http: Http, admin_key: str, unique: str):
    """Makes accounts through the operator API, deleted after the test:
    `account_id, api_key = new_account()`."""
    made = []

    def make(name: Optional[str] = None) -> tuple[str, str]:
        r = http.request("POST", "/accounts", admin_key, {"name": name or f"{unique}-{len(made)}"})
        assert r.status == 201, r.text
        made.append(r.body["data"]["id"])
        return r.body["data"]["id"], r.body["data"]["api_key"]

    yield make
    for account_id in made:
        http.request("DELETE", f"/accounts/{account_id}", admin_key)

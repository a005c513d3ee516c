"""Helpers the SDK tests import: the client as the tests build it, strict model validation and
a plain-HTTP client (urllib)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional

import telnyx


def sdk_client(base_url: str, key: str) -> telnyx.Telnyx:
    """The official client, unmodified, pointed at opentrunk. No retries, so a failing call
    fails at once instead of being retried behind the test's back."""
    return telnyx.Telnyx(api_key=key, base_url=base_url, max_retries=0, timeout=10)


def strict(model_cls: Any, raw: dict) -> Any:
    """Validates a raw JSON object against an SDK model with pydantic (the SDK itself builds
    its models leniently, keeping values of the wrong type as they came)."""
    return model_cls.model_validate(raw)


@dataclass
class Response:
    status: int
    body: Any
    text: str


class Http:
    """Plain HTTP (urllib) against the API, for what the SDK does not cover."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def request(
        self,
        method: str,
        path: str,
        key: Optional[str] = None,
        body: Any = None,
        query: Optional[dict] = None,
    ) -> Response:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Response(status, parsed, text)



"""The session mesh's gateway, spoken to over raw HTTP: what the tinker SDK sends, and what it
never would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from treadle_runtime.launcher import LocalMesh

OTHER_KEY = "tml-other"  # another tenant (tests/fixtures/mesh.py)
SDK_VERSION = "0.38.0"


@dataclass
class Reply:
    """An HTTP answer: status, headers, and the body (parsed when it is JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Http:
    """Raw requests to a gateway as one API key."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.key = key
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Reply:
        """`method path`; a dict body is sent as JSON, bytes as they are."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.key is not None:
            sent.setdefault("X-API-Key", self.key)
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=sent
        )
        try:
            with self.opener.open(request, timeout=timeout) as reply:
                return Reply(reply.status, dict(reply.headers), reply.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, {} if body is None else body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def session(self) -> str:
        """A new session's id."""
        reply = self.post("/api/v1/create_session", {"sdk_version": SDK_VERSION})
        assert reply.status == 200, reply.raw
        return str(reply.json["session_id"])

    def result(self, request_id: str) -> Reply:
        """A future's result, polling past try_again."""
        while True:
            reply = self.post(
                "/api/v1/retrieve_future",
                {"request_id": request_id},
                headers={"Accept": "application/x-protobuf"},
            )
            if reply.headers.get("content-type", "").startswith("application/json"):
                if reply.json.get("type") == "try_again":
                    continue
            return reply


@pytest.fixture()
def http(mesh: LocalMesh) -> Http:
    """The session mesh's gateway, as its tenant."""
    return Http(mesh.gateway_url, mesh.api_key)


@pytest.fixture()
def other(mesh: LocalMesh) -> Http:
    """The same gateway, as another tenant."""
    return Http(mesh.gateway_url, OTHER_KEY)

"""Bootstrap and sessions: the client config every SDK asks for first, which SDK versions are
served, API keys (missing, unknown, another tenant's), heartbeats and finishing a session."""

from __future__ import annotations

from .conftest import SDK_VERSION, Http
from .test_middleware import assert_refused


def test_client_config_puts_every_sdk_on_the_protobuf_paths(http: Http) -> None:
    reply = http.post("/api/v1/client/config", {"sdk_version": SDK_VERSION})
    assert reply.status == 200
    config = reply.json
    assert config["proto_write_fwdbwd"] and config["fwd_via_fwdbwd"]
    assert config["create_model_via_load_weights"] and not config["pjwt_auth_enabled"]


def test_an_sdk_too_old_to_serve_is_told_which_versions_are(http: Http) -> None:
    reply = http.post("/api/v1/client/config", {"sdk_version": "0.20.0"})
    assert_refused(reply, 400, "sdk_version")
    assert "0.24.1 and later" in reply.json["error"] and "0.38.0" in reply.json["error"]
    assert_refused(http.post("/api/v1/client/config", {"sdk_version": "banana"}), 400,
                   "sdk_version")  # fmt: skip


def test_a_newer_sdk_is_served_with_a_warning(http: Http) -> None:
    reply = http.post("/api/v1/create_session", {"sdk_version": "0.99.0"})
    assert reply.status == 200 and "newer than" in reply.json["warning_message"]


def test_a_missing_or_unknown_key_is_refused(http: Http) -> None:
    keyless = Http(http.base_url, None)
    assert_refused(keyless.post("/api/v1/client/config", {"sdk_version": SDK_VERSION}), 401,
                   "X-API-Key")  # fmt: skip
    stranger = Http(http.base_url, "tml-nobody")
    reply = stranger.post("/api/v1/client/config", {"sdk_version": SDK_VERSION})
    assert reply.status == 401 and reply.json["category"] == "user"
    assert stranger.post("/api/v1/create_session", {"sdk_version": SDK_VERSION}).status == 401


def test_another_tenants_session_is_not_found_like_an_unknown_one(http: Http, other: Http) -> None:
    session = http.session()
    theirs = other.post("/api/v1/session_heartbeat", {"session_id": session})
    unknown = http.post("/api/v1/session_heartbeat", {"session_id": "s0000000000000000"})
    for reply in (theirs, unknown):
        assert_refused(reply, 404, "session_id")
    assert http.post("/api/v1/session_heartbeat", {"session_id": session}).status == 200


def test_a_finished_session_is_gone(http: Http) -> None:
    session = http.session()
    assert (
        http.post(f"/api/v1/sessions/{session}/finish", {"reason": {"type": "success"}}).status
        == 200
    )
    gone = http.post("/api/v1/session_heartbeat", {"session_id": session})
    assert gone.status in (404, 410) and gone.json["category"] == "user"


def test_telemetry_is_accepted(http: Http) -> None:
    reply = http.post("/api/v1/telemetry", {"events": [], "sdk_version": SDK_VERSION})
    assert reply.json == {"status": "accepted"}


def test_capabilities_list_the_served_model(http: Http) -> None:
    models = http.get("/api/v1/get_server_capabilities").json["supported_models"]
    assert [m["model_name"] for m in models] == ["treadle/tiny-llama"]

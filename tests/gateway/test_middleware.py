"""Bad HTTP gets a 4xx with a JSON body naming what is wrong, category `user`, and the gateway
keeps serving: malformed JSON or protobuf, a wrong content type or encoding, a body over the
limit (declared, or inflated from zstd), an unknown route or method."""

from __future__ import annotations

import zstandard

from .conftest import SDK_VERSION, Http


def assert_refused(reply: object, status: int, field: str) -> None:
    assert reply.status == status, (reply.status, reply.raw)  # type: ignore[attr-defined]
    body = reply.json  # type: ignore[attr-defined]
    assert body["category"] == "user" and body["field"] == field, body
    assert body["error"]


def test_malformed_bodies_are_refused_naming_the_body(http: Http) -> None:
    assert_refused(http.post("/api/v1/create_session", b"{not json"), 400, "body")
    assert_refused(
        http.post(
            "/api/v1/forward_backward",
            b"\xff\xff\xff not a protobuf",
            headers={"Content-Type": "application/x-protobuf"},
        ),
        400,
        "body",
    )
    assert_refused(http.post("/api/v1/forward_backward", [1, 2, 3]), 400, "body")


def test_a_field_of_the_wrong_type_is_named(http: Http) -> None:
    session = http.session()
    reply = http.post(
        "/api/v1/create_model",
        {"session_id": session, "model_seq_id": "zero", "base_model": "treadle/tiny-llama"},
    )
    assert_refused(reply, 400, "model_seq_id")
    reply = http.post(
        "/api/v1/create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": "x", "lora_config": {"rank": 0}},
    )
    assert_refused(reply, 400, "lora_config.rank")


def test_wrong_content_type_and_encoding_are_refused_naming_the_header(http: Http) -> None:
    plain = {"Content-Type": "text/plain"}
    assert_refused(
        http.post("/api/v1/create_session", b"hello", headers=plain), 415, "Content-Type"
    )
    gzip = {"Content-Encoding": "gzip"}
    assert_refused(http.post("/api/v1/create_session", b"\x1f\x8b", headers=gzip), 415,
                   "Content-Encoding")  # fmt: skip
    bad_zstd = {"Content-Encoding": "zstd"}
    assert_refused(http.post("/api/v1/create_session", b"not zstd", headers=bad_zstd), 400, "body")


def test_zstd_bodies_are_read(http: Http) -> None:
    body = zstandard.ZstdCompressor().compress(b'{"sdk_version": "%s"}' % SDK_VERSION.encode())
    reply = http.post("/api/v1/create_session", body, headers={"Content-Encoding": "zstd"})
    assert reply.status == 200 and reply.json["session_id"], reply.raw


def test_bodies_over_the_limit_are_refused_before_they_are_read(http: Http) -> None:
    declared = http.post(
        "/api/v1/create_session", b"{}", headers={"Content-Length": str(1 << 40)}, timeout=10
    )
    assert_refused(declared, 413, "body")
    bomb = zstandard.ZstdCompressor().compress(b" " * (65 * 1024 * 1024))  # inflates past 64 MiB
    inflated = http.post("/api/v1/create_session", bomb, headers={"Content-Encoding": "zstd"})
    assert_refused(inflated, 413, "body")


def test_unknown_routes_and_methods_are_refused_as_json(http: Http) -> None:
    assert_refused(http.post("/api/v1/no_such_route", {}), 404, "route")
    assert_refused(http.get("/api/v1/create_session"), 405, "route")


def test_the_gateway_keeps_serving_after_bad_input(http: Http) -> None:
    for _ in range(3):
        http.post("/api/v1/create_session", b"{broken")
    assert http.get("/api/v1/healthz").json == {"status": "ok"}
    assert http.session()

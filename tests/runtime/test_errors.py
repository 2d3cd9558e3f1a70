"""The one mapping from what a handler raised to the status its client sees, on a real server:
a contract check names its field as INVALID_ARGUMENT, a peer's status passes on, a timeout is
DEADLINE_EXCEEDED, an unexpected error is INTERNAL without its text, a handler's own abort is
left alone, a long message arrives shortened (not as a metadata overflow), a streaming handler
fails after its first item with the same mapping, and every outcome is counted by its code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter

from fixtures.grpc_server import ServicersApp, running_server
from treadle.errors import bad_field
from treadle_runtime.errors import MAX_MESSAGE_CHARS, OpError, rpc, streaming_rpc

REQUESTS = Counter("probe_requests", "", ["method", "code"], registry=CollectorRegistry())
SECRET = "s3://bucket/tenant-a/secret-key"


def _raise(kind: bytes) -> None:
    if kind == b"validation":
        raise bad_field("loss_fn_config.beta", "is required by dro")
    if kind == b"op":
        raise OpError(grpc.StatusCode.NOT_FOUND, "model_id: unknown model 'x'", "model_id")
    if kind == b"peer":
        metadata = grpc.aio.Metadata()
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, metadata, metadata, "trainer gone")
    if kind == b"timeout":
        raise asyncio.TimeoutError
    if kind == b"internal":
        raise RuntimeError(f"could not read {SECRET}")
    if kind == b"long":
        raise OpError(grpc.StatusCode.INVALID_ARGUMENT, "base_model: " + "x" * 20000, "base_model")


class Probe:
    """Handlers that fail the way their request says."""

    @rpc(REQUESTS)
    async def Unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler's own abort")
        _raise(request)
        return b"ok"

    @streaming_rpc(REQUESTS)
    async def Stream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"first"
        _raise(request)
        yield b"last"


def register(server: grpc.aio.Server) -> list[str]:
    probe = Probe()
    handler = grpc.method_handlers_generic_handler(
        "probe.Probe",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(probe.Unary),
            "Stream": grpc.unary_stream_rpc_method_handler(probe.Stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    return ["probe.Probe"]


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with running_server(ServicersApp(register)) as at:
        yield at


def call(address: str, kind: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/probe.Probe/Unary")(kind, timeout=10)
    return failed.value


def count(method: str, code: str) -> float:
    return REQUESTS.labels(method, code)._value.get()


def counted(method: str, code: str, expected: float) -> bool:
    """Whether the outcome is counted: the server counts it as its handler ends, which may be
    just after the client has its status."""
    deadline = time.monotonic() + 5
    while count(method, code) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count(method, code) == expected


@pytest.mark.parametrize(
    ("kind", "code", "says"),
    [
        (b"validation", grpc.StatusCode.INVALID_ARGUMENT, "loss_fn_config.beta: is required"),
        (b"op", grpc.StatusCode.NOT_FOUND, "model_id: unknown model"),
        (b"peer", grpc.StatusCode.UNAVAILABLE, "trainer gone"),
        (b"timeout", grpc.StatusCode.DEADLINE_EXCEEDED, "Unary timed out"),
        (b"internal", grpc.StatusCode.INTERNAL, "Unary failed (RuntimeError)"),
        (b"abort", grpc.StatusCode.PERMISSION_DENIED, "handler's own abort"),
    ],
)
def test_each_failure_reaches_the_client_as_its_status(
    address: str, kind: bytes, code: grpc.StatusCode, says: str
) -> None:
    before = count("Unary", code.name)
    failure = call(address, kind)
    assert failure.code() == code  # type: ignore[attr-defined]
    assert says in (failure.details() or "")  # type: ignore[attr-defined]
    assert counted("Unary", code.name, before + 1)


def test_an_unexpected_error_never_shows_its_text(address: str) -> None:
    assert SECRET not in (call(address, b"internal").details() or "")  # type: ignore[attr-defined]


def test_a_long_message_arrives_shortened_under_its_own_code(address: str) -> None:
    failure = call(address, b"long")
    assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert len(failure.details() or "") <= MAX_MESSAGE_CHARS  # type: ignore[attr-defined]


def test_a_stream_that_fails_after_its_first_item_ends_with_the_mapped_status(
    address: str,
) -> None:
    received = []
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            for item in channel.unary_stream("/probe.Probe/Stream")(b"validation", timeout=10):
                received.append(item)
    assert received == [b"first"]
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with grpc.insecure_channel(address) as channel:
        assert list(channel.unary_stream("/probe.Probe/Stream")(b"", timeout=10)) == [
            b"first",
            b"last",
        ]
    assert counted("Stream", "OK", 1)

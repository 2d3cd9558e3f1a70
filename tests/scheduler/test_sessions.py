"""Sessions through a real scheduler: resume, idle release, and bad input on the stream — none of
which disturbs other sessions."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

import treadle
from fixtures.data import token_batch
from fixtures.scheduler import SchedulerFactory
from treadle.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

from .conftest import TINY, Raw, client, fb_request


class RawStream:
    """A Session stream driven message by message (no SDK), to send what the SDK never would."""

    def __init__(self, address: str, key: str = "tml-team-a") -> None:
        self.channel = grpc.insecure_channel(address)
        self.outgoing: queue.Queue[scheduler_pb2.ClientMessage | None] = queue.Queue()
        self.incoming: queue.Queue[object] = queue.Queue()
        stub = scheduler_pb2_grpc.TreadleStub(self.channel)
        self.call = stub.Session(self._requests(), metadata=(("x-api-key", key),))
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[scheduler_pb2.ClientMessage]:
        while (message := self.outgoing.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for message in self.call:
                self.incoming.put(message)
        except grpc.RpcError as exc:
            self.incoming.put(exc)
        self.incoming.put(None)

    def send(self, message: scheduler_pb2.ClientMessage) -> None:
        self.outgoing.put(message)

    def receive(self, timeout: float = 10.0) -> object:
        return self.incoming.get(timeout=timeout)

    def close(self) -> None:
        self.outgoing.put(None)
        self.channel.close()


def opened(stream: RawStream, session_id: str = "") -> scheduler_pb2.SessionOpened:
    stream.send(scheduler_pb2.ClientMessage(open=scheduler_pb2.OpenSession(session_id=session_id)))
    message = stream.receive()
    assert isinstance(message, scheduler_pb2.ServerMessage), message
    return message.opened


def test_first_message_must_open_the_session(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler() as address:
        stream = RawStream(address)
        stream.send(scheduler_pb2.ClientMessage(heartbeat=scheduler_pb2.Heartbeat()))
        failure = stream.receive()
        assert isinstance(failure, grpc.RpcError)
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "OpenSession" in (failure.details() or "")
        stream.close()


def test_unknown_and_foreign_models_are_not_found_alike(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler() as address, client(address, "tml-team-a") as a:
        with client(address, "tml-team-b") as b:
            theirs = b.create_lora_training_client(TINY, rank=4).model_id
            replies = []
            for model_id in (theirs, "s0000:train:99"):
                with pytest.raises(treadle.RequestFailedError) as failure:
                    Raw(a, model_id).fb(1, token_batch()).result(timeout=30)
                replies.append(failure.value)
            assert all(r.code == "NOT_FOUND" and r.field == "model_id" for r in replies)
            assert replies[0].message.replace(theirs, "X") == replies[1].message.replace(
                "s0000:train:99", "X"
            )
            # the owner is undisturbed
            Raw(b, theirs).fb(1, token_batch()).result(timeout=30)


def test_submit_without_an_operation_is_refused(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler() as address, client(address) as service:
        model_id = service.create_lora_training_client(TINY, rank=4).model_id
        with pytest.raises(treadle.RequestFailedError) as failure:
            Raw(service, model_id).submit(1).result(timeout=30)
        assert failure.value.code == "INVALID_ARGUMENT" and failure.value.field == "op"


def test_oversize_message_ends_only_that_stream(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(max_message_bytes=1 << 20) as address:
        with client(address, "tml-team-a") as a, client(address, "tml-team-b") as b:
            big = Raw(a, a.create_lora_training_client(TINY, rank=4).model_id)
            other = Raw(b, b.create_lora_training_client(TINY, rank=4).model_id)
            huge = token_batch(datums=8, length=20000)  # ~2.6 MB on the wire
            with pytest.raises(treadle.RequestFailedError) as failure:
                big.fb(1, huge).result(timeout=60)
            assert failure.value.code == "RESOURCE_EXHAUSTED"
            assert other.fb(1, token_batch()).result(timeout=30).forward_backward.metrics


def test_reconnecting_client_resumes_its_session(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(session_idle_seconds=30) as address, client(address) as service:
        training = service.create_lora_training_client(TINY, rank=4)
        stream = RawStream(address)
        resumed = opened(stream, service.session_id)
        assert resumed.resumed and resumed.session_id == service.session_id
        stream.close()
        foreign = RawStream(address, "tml-team-b")
        assert not opened(foreign, service.session_id).resumed  # not another tenant's
        foreign.close()
        assert training.forward_backward(token_batch()).result(timeout=30).metrics


def test_a_resumed_session_delivers_on_the_new_stream_only(
    make_scheduler: SchedulerFactory,
) -> None:
    with make_scheduler(session_idle_seconds=30) as address, client(address) as service:
        model_id = service.create_lora_training_client(TINY, rank=4).model_id
        stale = RawStream(address)  # a connection whose loss the scheduler has not noticed
        session_id = opened(stale).session_id
        fresh = RawStream(address)
        assert opened(fresh, session_id).resumed
        request = scheduler_pb2.Submit(
            request_id="r1",
            model_id=model_id,
            seq_id=1,
            forward_backward=fb_request(token_batch()),
        )
        fresh.send(scheduler_pb2.ClientMessage(submit=request))
        answers = []
        while not answers or answers[-1].WhichOneof("kind") != "result":
            message = fresh.receive(timeout=30)
            assert isinstance(message, scheduler_pb2.ServerMessage), message
            answers.append(message)
        assert answers[-1].result.request_id == "r1"
        ending = stale.receive(timeout=10)  # given nothing meant for the new one, then closed
        assert isinstance(ending, grpc.RpcError), ending
        assert ending.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "resumed on a newer stream" in (ending.details() or "")  # type: ignore[attr-defined]
        stale.close()
        fresh.close()


def test_silent_stream_is_released_others_continue(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(session_idle_seconds=1.0) as address:
        with client(address, "tml-team-b", heartbeat_seconds=0.2) as lively:
            training = lively.create_lora_training_client(TINY, rank=4)
            silent = RawStream(address)
            session = opened(silent)
            started = time.monotonic()
            released = silent.receive(timeout=10)
            assert isinstance(released, scheduler_pb2.ServerMessage)
            assert released.error.error.code == "ABORTED"
            assert "idle" in released.error.error.message
            assert silent.receive(timeout=10) is None  # the stream ended
            assert 1.0 <= time.monotonic() - started < 5
            silent.close()
            again = RawStream(address)
            assert not opened(again, session.session_id).resumed
            again.close()
            time.sleep(1.5)  # the heartbeating client outlives the idle timeout
            assert training.forward_backward(token_batch()).result(timeout=30).metrics


def test_quota_refuses_only_the_tenant_over_it(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(quota_max_models=1, quota_max_queued_tokens=100) as address:
        with client(address, "tml-team-a") as a, client(address, "tml-team-b") as b:
            first = a.create_lora_training_client(TINY, rank=4)
            with pytest.raises(treadle.RequestFailedError) as refused:
                a.create_lora_training_client(TINY, rank=4)
            assert refused.value.code == "RESOURCE_EXHAUSTED"
            assert "max_models" in refused.value.message
            other = b.create_lora_training_client(TINY, rank=4)
            with pytest.raises(treadle.RequestFailedError) as refused:
                first.forward_backward(token_batch(datums=4, length=64)).result(timeout=30)
            assert refused.value.code == "RESOURCE_EXHAUSTED"
            assert "max_queued_tokens" in refused.value.message
            assert first.forward_backward(token_batch(length=16)).result(timeout=30).metrics
            assert other.forward_backward(token_batch(length=16)).result(timeout=30).metrics


def test_checkpoint_admin_of_another_tenant_is_not_found(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler() as address:
        with client(address, "tml-team-a") as a, client(address, "tml-team-b") as b:
            training = a.create_lora_training_client(TINY, rank=4)
            path = training.save_state("mine").result(timeout=60).path
            rest = b.create_rest_client()
            assert rest.list_checkpoints(training.model_id).result(timeout=30) == []
            for call in (
                lambda: rest.set_checkpoint_ttl(path, 60).result(timeout=30),
                lambda: rest.delete_checkpoint(path).result(timeout=30),
                lambda: rest.download_checkpoint_archive(path).result(timeout=30),
            ):
                with pytest.raises(treadle.RequestFailedError) as failure:
                    call()
                assert failure.value.code == "NOT_FOUND"
            mine = a.create_rest_client().list_checkpoints(training.model_id).result(timeout=30)
            assert [c.path for c in mine] == [path]


def test_a_numbered_model_is_named_by_its_number_and_created_once(
    make_scheduler: SchedulerFactory,
) -> None:
    """Tinker names a model `{session}:train:{model_seq_id}` and retries its creation with the
    same number: the retry is the same model, and unnumbered models come after the numbers."""
    with make_scheduler() as address, client(address) as service:
        lora = common_pb2.LoraConfig(rank=4)

        def create(**number: int) -> scheduler_pb2.CreateModelResponse:
            request = scheduler_pb2.CreateModelRequest(
                session_id=service.session_id, base_model=TINY, lora_config=lora, **number
            )
            return service.connection.unary("CreateModel", request).result(timeout=60)

        first = create(model_seq_id=3)
        assert first.model_id == f"{service.session_id}:train:3"
        Raw(service, first.model_id).fb(1, token_batch()).result(timeout=30)
        again = create(model_seq_id=3)
        assert again.model_id == first.model_id
        assert Raw(service, first.model_id).fb(1, token_batch()).result(timeout=30)  # seq 1 kept
        assert create().model_id == f"{service.session_id}:train:4"
        with pytest.raises(treadle.RequestFailedError) as refused:
            create(model_seq_id=-1)
        assert refused.value.code == "INVALID_ARGUMENT" and "model_seq_id" in refused.value.message


def test_closing_a_session_releases_its_models_at_once(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(session_idle_seconds=300) as address, client(address) as owner:
        model_id = owner.create_lora_training_client(TINY, rank=4).model_id
        stream = RawStream(address)
        assert opened(stream, owner.session_id).resumed
        stream.send(scheduler_pb2.ClientMessage(close=scheduler_pb2.CloseSession()))
        released = stream.receive()
        assert isinstance(released, scheduler_pb2.ServerMessage)
        assert "closed by the client" in released.error.error.message
        stream.close()
        with pytest.raises(treadle.RequestFailedError) as gone:
            info = scheduler_pb2.GetInfoRequest(model_id=model_id)
            owner.connection.unary("GetInfo", info).result(timeout=30)
        assert gone.value.code == "NOT_FOUND"


def test_closing_the_client_releases_its_session_and_models(
    make_scheduler: SchedulerFactory,
) -> None:
    with make_scheduler(session_idle_seconds=300) as address:
        with client(address) as owner:
            model_id = owner.create_lora_training_client(TINY, rank=4).model_id
            session_id = owner.session_id
        with client(address) as other:  # the same tenant, a new session
            with pytest.raises(treadle.RequestFailedError) as gone:
                info = scheduler_pb2.GetInfoRequest(model_id=model_id)
                other.connection.unary("GetInfo", info).result(timeout=30)
        assert gone.value.code == "NOT_FOUND"
        stream = RawStream(address)
        stream.send(
            scheduler_pb2.ClientMessage(open=scheduler_pb2.OpenSession(session_id=session_id))
        )
        refused = stream.receive()
        stream.close()
        assert not (isinstance(refused, scheduler_pb2.ServerMessage) and refused.opened.resumed)

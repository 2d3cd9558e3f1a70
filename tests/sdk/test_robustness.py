"""The SDK survives a broken connection, cut or silently dead (reconnects, resumes its session,
re-sends, and nothing runs twice, and says so while requests wait) and keeps its session alive
through a minute of CPU-bound user code."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest

import treadle
from fixtures.data import token_batch
from fixtures.proxy import cuttable_proxy
from fixtures.scheduler import SchedulerFactory
from treadle import types
from treadle_runtime.launcher import LocalMesh

BASE_MODEL = "treadle/tiny-llama"


def train(training: treadle.TrainingClient, steps: int, cut: object = None) -> None:
    data, adam = token_batch(seed=9), types.AdamParams(learning_rate=1e-2)
    futures = []
    for step in range(steps):
        futures.append((training.forward_backward(data), training.optim_step(adam)))
        if step == steps // 2 and cut is not None:
            cut.cut()  # type: ignore[attr-defined]
    for fb, opt in futures:
        fb.result(timeout=60)
        opt.result(timeout=60)


def test_cut_connection_reconnects_and_runs_everything_once(
    mesh: LocalMesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="treadle.session_stream")
    with cuttable_proxy(mesh.endpoint) as proxy:
        with treadle.ServiceClient(base_url=proxy.address, api_key=mesh.api_key) as service:
            session_id = service.session_id
            cut = service.create_lora_training_client(BASE_MODEL, rank=4, seed=2)
            clean = service.create_lora_training_client(BASE_MODEL, rank=4, seed=2)
            train(cut, 8, cut=proxy)
            train(clean, 8)
            assert proxy.cuts == 1
            assert service.session_id == session_id  # the same session, resumed
            lost = [r for r in caplog.records if "session stream lost" in r.getMessage()]
            assert lost and lost[0].levelno == logging.WARNING and lost[0].waiting > 0
            after = [
                c.forward(token_batch(seed=9)).result(timeout=60).loss_fn_outputs
                for c in (cut, clean)
            ]
    for a, b in zip(*after, strict=True):
        np.testing.assert_allclose(a["logprobs"].to_numpy(), b["logprobs"].to_numpy(), atol=1e-6)


def test_a_silently_dead_connection_is_noticed_and_restored(mesh: LocalMesh) -> None:
    """The proxy keeps the connection open and drops every byte: no reset ever arrives, so only
    keepalive (every 6 s, 2 s to answer) can tell; the session resumes on a new connection."""
    with cuttable_proxy(mesh.endpoint) as proxy:
        with treadle.ServiceClient(
            base_url=proxy.address, api_key=mesh.api_key, keepalive_seconds=6, keepalive_timeout=2
        ) as service:
            session_id = service.session_id
            frozen = service.create_lora_training_client(BASE_MODEL, rank=4, seed=3)
            clean = service.create_lora_training_client(BASE_MODEL, rank=4, seed=3)
            started = time.monotonic()
            train(frozen, 4, cut=SimpleNamespace(cut=proxy.freeze))
            restored_in = time.monotonic() - started
            train(clean, 4)
            assert proxy.connections >= 2
            assert service.session_id == session_id
            after = [
                c.forward(token_batch(seed=9)).result(timeout=60).loss_fn_outputs
                for c in (frozen, clean)
            ]
    assert restored_in < 30, f"took {restored_in:.1f} s to notice and restore"
    for a, b in zip(*after, strict=True):
        np.testing.assert_allclose(a["logprobs"].to_numpy(), b["logprobs"].to_numpy(), atol=1e-6)


def test_session_survives_a_minute_of_cpu_bound_user_code(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(session_idle_seconds=10.0) as address:
        with treadle.ServiceClient(base_url=address, api_key="tml-team-a") as service:
            training = service.create_lora_training_client(BASE_MODEL, rank=4)
            deadline = time.monotonic() + 60.0
            total = 0
            while time.monotonic() < deadline:  # pure-Python work holding the GIL
                total += sum(i * i for i in range(10_000))
            assert total > 0
            result = training.forward_backward(token_batch()).result(timeout=60)
            assert result.metrics["loss:sum"] > 0


def test_a_session_that_cannot_be_restored_fails_later_requests_at_once(mesh: LocalMesh) -> None:
    """Once the SDK gives up reconnecting, nothing can answer a request any more: each later one
    fails at once with the reason, instead of waiting forever."""
    with cuttable_proxy(mesh.endpoint) as proxy:
        service = treadle.ServiceClient(
            base_url=proxy.address, api_key=mesh.api_key, reconnect_attempts=0
        )
        training = service.create_lora_training_client(BASE_MODEL, rank=4)
        training.forward(token_batch(seed=3)).result(timeout=60)
        proxy.cut()
        deadline = time.monotonic() + 30
        while service.connection.stream.ended is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(treadle.RequestFailedError) as lost:
            training.forward(token_batch(seed=3)).result(timeout=5)
        assert lost.value.code == "UNAVAILABLE"
        service.close()
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        training = service.create_lora_training_client(BASE_MODEL, rank=4)
    with pytest.raises(treadle.RequestFailedError) as closed:  # a request after close()
        training.forward(token_batch(seed=3)).result(timeout=5)
    assert closed.value.code == "CANCELLED"


def test_requests_waiting_when_the_session_is_lost_for_good_fail_with_the_reason(
    mesh: LocalMesh,
) -> None:
    """A request already sent when its session ends (here: the connection goes silent and the
    client may not reconnect) fails as soon as the loss is noticed, not never."""
    with cuttable_proxy(mesh.endpoint) as proxy:
        service = treadle.ServiceClient(
            base_url=proxy.address,
            api_key=mesh.api_key,
            reconnect_attempts=0,
            keepalive_seconds=6,
            keepalive_timeout=2,
        )
        training = service.create_lora_training_client(BASE_MODEL, rank=4)
        proxy.freeze()
        waiting = training.forward(token_batch(seed=4))
        started = time.monotonic()
        with pytest.raises(treadle.RequestFailedError) as lost:
            waiting.result(timeout=30)
        assert lost.value.code == "UNAVAILABLE"
        assert time.monotonic() - started < 20
        service.close()

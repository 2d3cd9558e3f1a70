"""API keys: tenants from keys, UNAUTHENTICATED for a wrong or missing key, health stays open."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixtures.grpc_server import running_server
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc
from treadle_runtime.auth import ApiKeys, parse_api_keys
from treadle_scheduler.app import SchedulerApp
from treadle_scheduler.config import SchedulerConfig


def test_parse_keys_from_spec_and_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "keys.txt"
    lines.write_text("# team keys\ntml-b teamb\n")
    as_json = tmp_path / "keys.json"
    as_json.write_text('{"tml-c": "teamc"}')
    assert parse_api_keys("tml-a=teama", str(lines)) == {"tml-a": "teama", "tml-b": "teamb"}
    assert parse_api_keys("", str(as_json)) == {"tml-c": "teamc"}
    with pytest.raises(ValueError, match="KEY=tenant"):
        parse_api_keys("tml-a")


def test_tenant_from_metadata() -> None:
    keys = ApiKeys({"tml-a": "teama"})
    assert keys.tenant_for([("x-api-key", "tml-a")]) == "teama"
    assert keys.tenant_for([("authorization", "Bearer tml-a")]) == "teama"
    assert keys.tenant_for([("x-api-key", "tml-b")]) is None
    assert keys.tenant_for([]) is None


def test_wrong_key_is_unauthenticated_on_a_real_server() -> None:
    keys = ApiKeys({"tml-good": "teama"})
    app = SchedulerApp(SchedulerConfig(trainers="127.0.0.1:1"), keys)
    with running_server(app) as address:
        with grpc.insecure_channel(address) as channel:
            stub = scheduler_pb2_grpc.TreadleStub(channel)
            request = scheduler_pb2.GetCapabilitiesRequest()
            for metadata, reason in ((("x-api-key", "tml-bad"),), "invalid"), ((), "missing"):
                with pytest.raises(grpc.RpcError) as failure:
                    stub.GetCapabilities(request, metadata=metadata, timeout=5)
                assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert reason in failure.value.details()
            reply = stub.GetCapabilities(request, metadata=(("x-api-key", "tml-good"),), timeout=5)
            assert reply.max_batch_datums > 0
            for _ in range(30):  # the streaming Session call is refused the same way, every time
                stream = stub.Session(
                    iter([scheduler_pb2.ClientMessage(open=scheduler_pb2.OpenSession())]),
                    metadata=(("x-api-key", "tml-bad"),),
                )
                with pytest.raises(grpc.RpcError) as failure:
                    list(stream)
                assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING

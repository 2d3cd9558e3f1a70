"""The scheduler's routing of sampling to sampler replicas, with real sampler servers: a DNS name
stands for every replica it resolves to and is resolved again as replicas come and go; a request
goes to a replica that recently served its adapter, otherwise to the least loaded one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from fixtures.grpc_server import running_server
from sampler.conftest import TINY, Adapter, publish
from treadle.v1 import common_pb2
from treadle_sampler.app import SamplerApp
from treadle_sampler.config import SamplerConfig
from treadle_sampler.torch_engine import TorchEngine
from treadle_scheduler.sampling import SamplerPool

NAME = "samplers.treadle.test"


@contextmanager
def replica(checkpoints: str) -> Iterator[str]:
    """A sampler server with an engine of its own; yields its address."""
    engine = TorchEngine(TINY, max_batch_size=4)
    config = SamplerConfig(checkpoints=checkpoints)
    try:
        app = SamplerApp(config, engine=engine)
        with running_server(app, service="sampler", config=config) as at:
            yield at
    finally:
        asyncio.run(engine.close())


def request(path: str) -> common_pb2.SampleRequest:
    chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=[5, 6, 7]))
    return common_pb2.SampleRequest(
        model_path=path,
        prompt=common_pb2.ModelInput(chunks=[chunk]),
        num_samples=1,
        sampling_params=common_pb2.SamplingParams(max_tokens=2, seed=0),
    )


def test_a_name_stands_for_its_replicas_and_warm_ones_are_preferred(
    checkpoints: str, tenant: str, adapter_a: Adapter
) -> None:
    path = publish(checkpoints, tenant, "treadle://replicas:train:0/sampler_weights/a", adapter_a)
    with ExitStack() as stack:
        first, second = (stack.enter_context(replica(checkpoints)) for _ in range(2))
        resolved = [first]

        async def resolve(host: str, port: int) -> list[str]:
            assert (host, port) == (NAME, 8472)
            if not resolved:
                raise OSError("name not known")
            return list(resolved)

        async def scenario() -> None:
            pool = SamplerPool([f"{NAME}:8472"], resolve)
            await pool.refresh()
            assert [link.address for link in pool.links] == [first]
            resolved.append(second)  # a replica is added
            await pool.refresh()
            links = {link.address: link for link in pool.links}
            assert set(links) == {first, second}
            assert all(link.models == {TINY} for link in pool.links)

            response = await pool.sample(tenant, TINY, request(path))
            assert len(response.sequences) == 1
            (warm,) = [link for link in pool.links if path in link.warm]
            cold = links[second if warm.address == first else first]
            warm.in_flight = 5  # busier, but it holds the adapter
            assert await pool.choose(TINY, path) is warm
            assert await pool.choose(TINY, "") is cold  # no adapter: the least loaded
            warm.in_flight = 0

            resolved.clear()  # the name stops resolving for a moment: nothing is dropped
            await pool.refresh()
            assert {link.address for link in pool.links} == {first, second}
            resolved.append(second)  # the first replica is gone
            await pool.refresh()
            assert [link.address for link in pool.links] == [second]
            assert (await pool.sample(tenant, TINY, request(path))).sequences
            await pool.close()

        asyncio.run(scenario())

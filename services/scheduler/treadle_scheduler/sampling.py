"""Routing of sample and compute_logprobs requests to sampler replicas.

A request goes to a sampler serving its base model, preferring one that has recently served the
same adapter (its cache is warm), otherwise the one with the fewest requests in flight. Sampling
is not cycle-bound: it runs as soon as it arrives.

Replicas are found by name: each configured address whose host is a DNS name (a Kubernetes
headless Service, for example) stands for every address it resolves to, and names are resolved
again on every refresh, so replicas that an autoscaler adds are used and removed ones dropped.
A name that fails to resolve keeps the replicas it had.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import grpc

from treadle.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc
from treadle_runtime.errors import MAX_MESSAGE_CHARS, OpError

log = logging.getLogger(__name__)
WARM_KEPT = 64  # adapter paths remembered per sampler


class SamplerLink:
    """One sampler replica."""

    def __init__(self, address: str, channel_options: Sequence[tuple[str, int]] = ()) -> None:
        self.address = address
        self.channel_options = list(channel_options)
        self.models: set[str] = set()
        self.in_flight = 0
        self.warm: OrderedDict[str, None] = OrderedDict()
        self._channel: grpc.aio.Channel | None = None
        self.stub: sampler_pb2_grpc.SamplerAsyncStub | None = None

    async def refresh(self) -> bool:
        """Learn (again) which models the sampler serves; False if it cannot be reached."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address, self.channel_options)
            self.stub = sampler_pb2_grpc.SamplerStub(self._channel)
        assert self.stub is not None
        try:
            info = await self.stub.GetSamplerInfo(sampler_pb2.GetSamplerInfoRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
        self.models = {m.name for m in info.models}
        return True

    def mark_warm(self, path: str) -> None:
        """Remember that this sampler has `path` loaded."""
        self.warm[path] = None
        self.warm.move_to_end(path)
        while len(self.warm) > WARM_KEPT:
            self.warm.popitem(last=False)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)


Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> ["ip:port", ...]


async def resolve_replicas(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as "ip:port" (IPv6 in brackets)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = []
    for family, *_, sockaddr in infos:
        ip = f"[{sockaddr[0]}]" if family == socket.AF_INET6 else sockaddr[0]
        found.append(f"{ip}:{port}")
    return list(dict.fromkeys(found))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class SamplerPool:
    """All sampler replicas, found from the configured addresses."""

    def __init__(
        self,
        addresses: list[str],
        resolve: Resolver = resolve_replicas,
        *,
        channel_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.targets = addresses
        self.resolve = resolve
        self.channel_options = list(channel_options)
        self.found: dict[str, list[str]] = {a: [a] for a in addresses}  # target -> replicas
        self.links = [SamplerLink(a, self.channel_options) for a in addresses]

    async def discover(self) -> None:
        """Resolve the named targets again; add links for new replicas, close vanished ones."""
        for target in self.targets:
            host, _, port = target.rpartition(":")
            if _is_ip(host):
                continue
            try:
                self.found[target] = await self.resolve(host, int(port)) or self.found[target]
            except OSError as exc:  # keep what was found before
                log.warning("sampler name did not resolve", extra={"target": target, "error": exc})
        wanted = list(dict.fromkeys(a for t in self.targets for a in self.found[t]))
        known = {link.address: link for link in self.links}
        gone = [link for address, link in known.items() if address not in wanted]
        self.links = [
            known.get(address) or SamplerLink(address, self.channel_options) for address in wanted
        ]
        await asyncio.gather(*(link.close() for link in gone))

    async def refresh(self) -> None:
        """Find the replicas and query every one's models (unreachable ones are retried on
        use)."""
        await self.discover()
        await asyncio.gather(*(link.refresh() for link in self.links))

    def base_models(self) -> set[str]:
        """Base models some sampler serves."""
        return set().union(*(link.models for link in self.links)) if self.links else set()

    async def choose(self, base_model: str, path: str) -> SamplerLink:
        """The sampler for `base_model` best placed to serve adapter `path`."""
        candidates = [link for link in self.links if base_model in link.models]
        if not candidates:
            await self.refresh()
            candidates = [link for link in self.links if base_model in link.models]
        if not candidates:
            raise OpError(
                grpc.StatusCode.UNAVAILABLE, f"no sampler serves base model {base_model!r} now"
            )
        warm = [link for link in candidates if path and path in link.warm]
        return min(warm or candidates, key=lambda link: link.in_flight)

    async def sample(
        self, tenant: str, base_model: str, request: common_pb2.SampleRequest
    ) -> common_pb2.SampleResponse:
        """Run a sampling request on a chosen replica and gather its streamed sequences."""
        link = await self.choose(base_model, request.model_path)
        assert link.stub is not None
        link.in_flight += 1
        try:
            sequences: dict[int, common_pb2.SampledSequence] = {}
            done = common_pb2.SampleResponse()
            call = link.stub.Sample(
                sampler_pb2.SamplerSampleRequest(tenant=tenant, request=request)
            )
            async for event in call:
                if event.WhichOneof("event") == "sequence":
                    sequences[event.sequence.index] = event.sequence.sequence
                else:
                    done = event.done
            done.ClearField("sequences")
            done.sequences.extend(sequences[i] for i in sorted(sequences))
            link.mark_warm(request.model_path)
            return done
        except grpc.aio.AioRpcError as exc:
            raise OpError(
                exc.code(), (exc.details() or "sampler failed")[:MAX_MESSAGE_CHARS]
            ) from None
        finally:
            link.in_flight -= 1

    async def compute_logprobs(
        self, tenant: str, base_model: str, request: common_pb2.ComputeLogprobsRequest
    ) -> common_pb2.ComputeLogprobsResponse:
        """Run a logprob request on a chosen replica."""
        link = await self.choose(base_model, request.model_path)
        assert link.stub is not None
        link.in_flight += 1
        try:
            wrapped = sampler_pb2.SamplerComputeLogprobsRequest(tenant=tenant, request=request)
            response = await link.stub.ComputeLogprobs(wrapped)
            link.mark_warm(request.model_path)
            return response
        except grpc.aio.AioRpcError as exc:
            raise OpError(
                exc.code(), (exc.details() or "sampler failed")[:MAX_MESSAGE_CHARS]
            ) from None
        finally:
            link.in_flight -= 1

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(link.close() for link in self.links))

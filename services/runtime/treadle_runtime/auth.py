"""API keys to tenants, and the gRPC interceptor that refuses unknown keys.

A client sends its key as metadata `x-api-key: KEY` or `authorization: Bearer KEY`. Keys come
from a keys file (JSON object `{"KEY": "tenant"}` or lines `KEY tenant`; in Kubernetes a mounted
Secret) and/or a spec string `KEY=tenant,KEY2=tenant2` (an environment variable). Keys are
compared in constant time and never logged; the health service needs no key.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

OPEN_METHODS = ("/grpc.health.v1.Health/",)


def parse_api_keys(spec: str = "", path: str = "") -> dict[str, str]:
    """Parse a `KEY=tenant,...` spec and/or a keys file into {key: tenant}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, tenant = item.partition("=")
        if not sep or not key or not tenant:
            raise ValueError(f"api_keys: entry {item.split('=')[0][:4]}… is not KEY=tenant")
        keys[key] = tenant
    if path:
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            loaded = json.loads(text)
            if not all(isinstance(v, str) for v in loaded.values()):
                raise ValueError(f"api_keys_file {path}: values must be tenant names")
            keys.update(loaded)
        else:
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.replace("=", " ").split()
                if len(parts) != 2:
                    raise ValueError(f"api_keys_file {path}:{number}: expected 'KEY tenant'")
                keys[parts[0]] = parts[1]
    return keys


class ApiKeys:
    """Maps API keys to tenants."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def tenant_for(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """The tenant of the key in `metadata`, or None when absent or unknown."""
        presented = key_from_metadata(metadata)
        if presented is None:
            return None
        for key, tenant in self._keys.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                return tenant
        return None

    def tenant(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's tenant; the interceptor has already refused unknown keys."""
        tenant = self.tenant_for(context.invocation_metadata())
        if tenant is None:  # reachable only if the interceptor is not installed
            raise PermissionError("no valid API key")
        return tenant


def key_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The API key in gRPC metadata, from `x-api-key` or a bearer `authorization` header."""
    for name, value in metadata or ():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if name == "x-api-key":
            return str(value)
        if name == "authorization" and str(value).lower().startswith("bearer "):
            return str(value)[7:].strip()
    return None


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_streaming(
        request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises; this makes the function a generator

    kind = (handler.request_streaming, handler.response_streaming)
    make: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    return make[kind](
        abort_streaming if handler.response_streaming else abort,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without a known API key with UNAUTHENTICATED (health is open)."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHODS):
            return handler
        metadata = handler_call_details.invocation_metadata
        if self.keys.tenant_for(metadata) is not None:
            return handler
        reason = "missing API key" if key_from_metadata(metadata) is None else "invalid API key"
        log.warning("refused call", extra={"method": method, "reason": reason})
        return _refusal(handler, f"{reason}: send it as x-api-key metadata")

"""The SGLang engine: a thin adapter over an SGLang server's documented HTTP API (GPU machines).

SGLang cannot be installed where Treadle is built and tested (CUDA-only wheels of several GB), so
this file only speaks HTTP, and CI checks it against a contract stand-in that replays the same
shapes (tests/sampler/sglang_contract_server.py). Every shape below is from SGLang's docs and
source (sgl-project/sglang): docs/basic_usage/sampling_params.md (the /generate arguments and
sampling parameters), docs/basic_usage/native_api.ipynb (/health, /health_generate,
/get_model_info), docs/advanced_features/lora.ipynb ("Dynamic LoRA loading"),
python/sglang/srt/managers/io_struct.py (LoadLoRAAdapterReqInput, LoRAUpdateOutput),
python/sglang/srt/sampling/sampling_params.py (SamplingParams, incl. sampling_seed),
tokenizer_manager.py (logprobs as [logprob, token_id, text]) and schedule_batch.py (finish
reasons).

    POST /generate            {"input_ids": [int], "sampling_params": {...}, "return_logprob": true,
                               "logprob_start_len": int, "lora_path": name}
                           -> {"output_ids": [int], "meta_info": {
                                 "finish_reason": {"type": "stop", "matched": int | str}
                                                | {"type": "length", "length": int},
                                 "output_token_logprobs": [[logprob, token_id, text|null], ...],
                                 "input_token_logprobs": [[null, t0, null], [lp, t1, null], ...]}}
    POST /load_lora_adapter   {"lora_name", "lora_path"} -> 200 {"success": true, ...}
                                                           | 400 {"success": false, "error_message"}
    POST /unload_lora_adapter {"lora_name"}               -> the same
    GET  /health              200 once the server is up

Adapters are loaded by path from the local PEFT folder the adapter cache wrote, never through
/load_lora_adapter_from_tensors. How Treadle's semantics map onto SGLang:
- Sequence i of a request is its own /generate with sampling_seed = seed + i (as in the torch
  engine); SGLang's radix cache shares the prompt's prefill between them and its scheduler batches
  them with every other request and adapter (--max-loras-per-batch). SGLang honours sampling_seed
  only when started with --enable-deterministic-inference (the launcher passes it), and then uses
  seed 42 for requests without one, so a seed is always sent.
- temperature 0 is greedy in SGLang too; top_k <= 0 becomes -1 (all tokens); min_p and
  repetition_penalty are sent as their neutral values so a model's generation_config defaults
  cannot change the distribution.
- "no_stop_trim": true keeps the stop token (or the tokens completing a stop string) in
  output_ids, as Treadle's contract says.
- Logprobs: SGLang's default (SGLANG_RETURN_ORIGINAL_LOGPROB unset) reports log_softmax(logits /
  temperature) of the sampled token, before top-k/top-p truncation: the vLLM and torch engines'
  distribution without top-k/top-p (with them, theirs renormalise over the kept tokens and
  SGLang's does not); greedy reports temperature 1 in all three.
- compute_logprobs is /generate with logprob_start_len 0 and one new token; input_token_logprobs
  entry 0 is null (the first token has no prefix) and is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from treadle_models import ModelSpec, model_spec
from treadle_runtime.errors import OpError
from treadle_sampler import metrics
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import Completion, SamplingOptions
from treadle_sampler.sglang_server import LaunchedServer, launch, wait_healthy

log = logging.getLogger(__name__)
SEED_RANGE = 1 << 63


def generate_request(
    prompt: Sequence[int], options: SamplingOptions, seed: int, lora: str | None
) -> dict[str, Any]:
    """The /generate body of one sequence."""
    params: dict[str, Any] = {
        "max_new_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k if options.top_k > 0 else -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "sampling_seed": seed % SEED_RANGE,
        "no_stop_trim": True,
    }
    if options.stop_strings:
        params["stop"] = list(options.stop_strings)
    if options.stop_token_ids:
        params["stop_token_ids"] = list(options.stop_token_ids)
    body: dict[str, Any] = {
        "input_ids": list(prompt),
        "sampling_params": params,
        "return_logprob": True,
    }
    if lora is not None:
        body["lora_path"] = lora
    return body


def logprobs_request(tokens: Sequence[int], lora: str | None) -> dict[str, Any]:
    """The /generate body that scores every token of `tokens`."""
    body: dict[str, Any] = {
        "input_ids": list(tokens),
        "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
        "return_logprob": True,
        "logprob_start_len": 0,
    }
    if lora is not None:
        body["lora_path"] = lora
    return body


def completion(reply: dict[str, Any]) -> Completion:
    """A finished sequence from a /generate reply."""
    meta = reply["meta_info"]
    tokens = [int(t) for t in reply["output_ids"]]
    entries = meta["output_token_logprobs"]
    if [int(entry[1]) for entry in entries] != tokens:
        raise RuntimeError("SGLang's output_ids and output_token_logprobs disagree")
    finish = meta.get("finish_reason") or {}
    if finish.get("type") not in ("stop", "length"):
        raise RuntimeError(f"SGLang ended the sequence with {finish!r}")
    return Completion(tokens, [float(entry[0]) for entry in entries], finish["type"])


def input_logprobs(reply: dict[str, Any], tokens: Sequence[int]) -> list[float]:
    """Logprobs of tokens[1:] from a reply to `logprobs_request(tokens)`."""
    entries = reply["meta_info"]["input_token_logprobs"]
    if len(entries) != len(tokens):  # (ids not compared: SGLang writes 0 for id vocab_size - 1)
        raise RuntimeError("SGLang's input_token_logprobs do not match the tokens sent")
    return [float(entry[0]) for entry in entries[1:]]


class SGLangEngine:
    """Sampling through an SGLang server at `url` (see the module docstring)."""

    name = "sglang"

    def __init__(
        self,
        spec: ModelSpec,
        url: str,
        *,
        max_in_flight: int = 64,
        timeout: float = 600.0,
        server: LaunchedServer | None = None,
    ) -> None:
        self.spec = spec
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._server = server
        self._loaded: set[str] = set()
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="sglang-http")
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_config(cls, config: SamplerConfig) -> SGLangEngine:
        """Attach to `config.sglang_url`, or launch a server when it is empty; wait until ready."""
        spec = model_spec(config.base_model)
        server = None if config.sglang_url else launch(config)
        try:
            url = server.url if server is not None else config.sglang_url
            process = server.process if server is not None else None
            wait_healthy(url, config.sglang_timeout_seconds, process)
        except Exception:
            if server is not None:
                server.stop()
            raise
        return cls(
            spec,
            url,
            max_in_flight=config.max_batch_size,
            timeout=config.sglang_timeout_seconds,
            server=server,
        )

    # The engine interface.

    async def sample(
        self,
        adapter: str | None,
        prompt: Sequence[int],
        num_samples: int,
        options: SamplingOptions,
    ) -> AsyncIterator[tuple[int, Completion]]:
        """One /generate per sequence; yield each as soon as SGLang answers it."""
        lora = self._lora(adapter)
        seed = options.seed if options.seed is not None else secrets.randbits(63)

        async def one(index: int) -> tuple[int, Completion]:
            body = generate_request(prompt, options, seed + index, lora)
            return index, completion(await self._post("/generate", body))

        tasks = [asyncio.ensure_future(one(i)) for i in range(num_samples)]
        try:
            for finished in asyncio.as_completed(tasks):
                index, result = await finished
                metrics.TOKENS_GENERATED.inc(len(result.tokens))
                metrics.SEQUENCES_FINISHED.labels(result.stop_reason).inc()
                yield index, result
        finally:
            for task in tasks:
                task.cancel()

    async def compute_logprobs(self, adapter: str | None, tokens: Sequence[int]) -> list[float]:
        """Logprob of tokens[1:] given their prefix (prompt logprobs from logprob_start_len 0)."""
        lora = self._lora(adapter)
        if len(tokens) < 2:
            return []
        return input_logprobs(await self._post("/generate", logprobs_request(tokens, lora)), tokens)

    async def load_adapter(self, key: str, folder: Path) -> None:
        """POST /load_lora_adapter with the folder's path; ValueError if SGLang refuses it."""
        body = {"lora_name": key, "lora_path": str(folder)}
        status, reply = await self._request("POST", "/load_lora_adapter", body)
        if status != 200 or not reply.get("success", False):
            raise ValueError(f"SGLang cannot load it: {_error_text(reply)}")
        self._loaded.add(key)

    async def evict(self, key: str) -> None:
        """POST /unload_lora_adapter."""
        if key not in self._loaded:
            return
        self._loaded.discard(key)
        status, reply = await self._request("POST", "/unload_lora_adapter", {"lora_name": key})
        if status != 200:
            log.warning("SGLang did not unload an adapter", extra={"reason": _error_text(reply)})

    async def close(self) -> None:
        """Stop talking to SGLang (and stop the server if this engine launched it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)

    # HTTP.

    def _lora(self, adapter: str | None) -> str | None:
        if adapter is not None and adapter not in self._loaded:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        return adapter

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, reply = await self._request("POST", path, body)
        if status != 200:
            raise RuntimeError(f"SGLang {path} answered {status}: {_error_text(reply)}")
        return reply

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, method, path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._http.open(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OpError(
                grpc.StatusCode.UNAVAILABLE, f"SGLang server {self.url} unreachable: {reason}"
            ) from None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"error_message": data[:500].decode(errors="replace")}


def _error_text(reply: Any) -> str:
    if isinstance(reply, dict):
        error = reply.get("error_message") or reply.get("error") or reply.get("message")
        if isinstance(error, dict):
            error = error.get("message")
        if error:
            return str(error)
    return str(reply)[:500]

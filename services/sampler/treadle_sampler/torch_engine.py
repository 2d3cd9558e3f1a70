"""The torch sampling engine: transformers + peft, many adapters in one PeftModel, one thread.

Key decisions:
- One worker thread owns the model. Every forward, adapter load and eviction runs on it, between
  decode steps, so peft's per-call adapter hooks and module injection never race. The gRPC event
  loop only queues work and awaits results.
- Continuous batching across requests: at each step the worker admits waiting requests (in
  arrival order, up to `max_batch_size` sequences), prefills their prompts in one left-padded
  forward (`logits_to_keep=1`), expands each prompt's cache to its num_samples rows (one prefill
  per request), and merges them into the running batch (`decode_batch.py`). One decode step then
  advances every sequence of every request, each row with its own adapter through peft's
  `adapter_names` (`__base__` for the base model).
- Sequence i of a request draws from its own torch.Generator seeded with seed + i, so a fixed seed
  gives the same tokens whatever else shares the batch. Logprobs and stops: see `sampling.py`.
- compute_logprobs is one full forward and `treadle_models.target_logprobs`, the trainer's
  computation. Adapters live in one `AdapterBank` (`adapter_bank.py`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from treadle_models import ModelSpec, load_model, load_tokenizer, model_spec, target_logprobs
from treadle_models.devices import pick_device, pick_dtype
from treadle_runtime.errors import invalid
from treadle_sampler import metrics
from treadle_sampler.adapter_bank import BASE, AdapterBank
from treadle_sampler.config import SamplerConfig
from treadle_sampler.decode_batch import DecodeBatch, Row, full_attention_layers, select_rows
from treadle_sampler.engine import Completion, SamplingOptions, StopReason
from treadle_sampler.sampling import StopCheck, choose_tokens

log = logging.getLogger(__name__)


class _Delivery:
    """Hands results from the worker thread to an awaiting coroutine on its event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class SampleJob(_Delivery):
    """One sample request inside the engine."""

    def __init__(
        self, adapter: str, prompt: list[int], num_samples: int, options: SamplingOptions
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.prompt = prompt
        self.num_samples = num_samples
        self.options = options
        self.seed = options.seed if options.seed is not None else secrets.randbits(63)
        self.stop: StopCheck | None = None
        self.results: asyncio.Queue[tuple[int, Completion] | BaseException] = asyncio.Queue()
        self.submitted = time.perf_counter()
        self.cancelled = False

    def emit(self, item: tuple[int, Completion] | BaseException) -> None:
        """Deliver a finished sequence, or the error that ends the request."""
        self._call(self.results.put_nowait, item)


class _Command(_Delivery):
    """A function to run on the worker thread, with a future for its result."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as exc:
            result, error = None, exc
        self._call(self._resolve, result, error)

    def fail(self, error: BaseException) -> None:
        """Resolve with `error` without running."""
        self._call(self._resolve, None, error)

    def _resolve(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():  # the caller went away
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


class TorchEngine:
    """Sampling with transformers + peft on one device (see the module docstring)."""

    name = "torch"

    def __init__(
        self,
        base_model: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch_size: int = 64,
    ) -> None:
        self.spec: ModelSpec = model_spec(base_model)
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.model: PreTrainedModel = load_model(base_model, dtype=dtype, device=self.device)
        self.tokenizer = _try_tokenizer(base_model)
        self.eos_token_ids = _eos_token_ids(self.model, self.tokenizer)
        full_attention_layers(DynamicCache(config=self.model.config))  # refuse other caches now
        self._bank = AdapterBank(self.model)  # touched by the worker thread only
        self._names: dict[str, str] = {}  # adapter key -> the bank's adapter name
        self._inbox: deque[SampleJob | _Command] = deque()
        self._waiting: deque[SampleJob] = deque()
        self._batch = DecodeBatch()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: SamplerConfig) -> TorchEngine:
        """The engine `config` describes (device and dtype "auto": treadle_models.devices)."""
        device = pick_device(config.device)
        return cls(
            config.base_model,
            device=str(device),
            dtype=pick_dtype(config.dtype, device),
            max_batch_size=config.max_batch_size,
        )

    # The engine interface (called on the event loop).

    async def sample(
        self,
        adapter: str | None,
        prompt: Sequence[int],
        num_samples: int,
        options: SamplingOptions,
    ) -> AsyncIterator[tuple[int, Completion]]:
        """Yield (index, completion) for each sequence as soon as it finishes."""
        job = SampleJob(self._adapter_name(adapter), list(prompt), num_samples, options)
        try:
            job.stop = StopCheck(options, self.eos_token_ids, self.tokenizer)
        except ValueError as exc:
            raise invalid("sampling_params.stop_strings", str(exc)) from None
        self._submit(job)
        try:
            for _ in range(num_samples):
                item = await job.results.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled = True  # a client that went away frees its rows at the next step

    async def compute_logprobs(self, adapter: str | None, tokens: Sequence[int]) -> list[float]:
        """Logprob of tokens[1:] given their prefix, from one full forward."""
        name = self._adapter_name(adapter)
        if len(tokens) < 2:
            return []
        return await self._call(lambda: self._logprobs(name, list(tokens)))

    async def load_adapter(self, key: str, folder: Path) -> None:
        """Load the PEFT adapter in `folder` as `key`; ValueError if it cannot be loaded."""
        self._names[key] = await self._call(lambda: self._bank.load(folder))

    async def evict(self, key: str) -> None:
        """Delete adapter `key` from the model."""
        name = self._names.pop(key, None)
        if name is not None:
            await self._call(lambda: self._bank.delete(name))

    async def close(self) -> None:
        """Stop the worker; requests still running fail."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        await asyncio.to_thread(self._thread.join)

    def _adapter_name(self, adapter: str | None) -> str:
        if adapter is None:
            return BASE
        if adapter not in self._names:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        return self._names[adapter]

    def _submit(self, item: SampleJob | _Command) -> None:
        with self._wake:
            if self._stopping:
                raise RuntimeError("the sampling engine is shut down")
            self._inbox.append(item)
            self._wake.notify()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        command = _Command(fn)
        self._submit(command)
        return await command.future

    # The worker thread.

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._inbox or self._waiting or self._batch.rows):
                    self._wake.wait()
                if self._stopping:
                    break
                inbox = list(self._inbox)
                self._inbox.clear()
            for item in inbox:
                if isinstance(item, SampleJob):
                    self._waiting.append(item)
                else:
                    item.run()
            self._step()
        self._fail_all(RuntimeError("the sampler is shutting down"))

    def _step(self) -> None:
        admitted = self._admit()
        try:
            with torch.inference_mode():
                if admitted:
                    self._prefill(admitted)
                if self._batch.rows:
                    self._decode()
        except Exception as exc:
            log.exception("generation step failed")
            failure = RuntimeError(f"generation failed: {exc}")
            for job in {id(j): j for j in [*admitted, *(r.job for r in self._batch.rows)]}.values():
                job.emit(failure)
            self._batch = DecodeBatch()
        metrics.RUNNING_SEQUENCES.set(len(self._batch))
        metrics.WAITING_REQUESTS.set(len(self._waiting))

    def _admit(self) -> list[SampleJob]:
        admitted: list[SampleJob] = []
        rows = len(self._batch)
        while self._waiting:
            job = self._waiting[0]
            if not job.cancelled and rows and rows + job.num_samples > self.max_batch_size:
                break
            self._waiting.popleft()
            if not job.cancelled:
                admitted.append(job)
                rows += job.num_samples
        return admitted

    def _prefill(self, jobs: list[SampleJob]) -> None:
        R, P = len(jobs), max(len(job.prompt) for job in jobs)
        ids_RP = torch.zeros((R, P), dtype=torch.long, device=self.device)
        mask_RP = torch.zeros((R, P), dtype=torch.long, device=self.device)
        for r, job in enumerate(jobs):
            ids_RP[r, P - len(job.prompt) :] = torch.tensor(job.prompt, device=self.device)
            mask_RP[r, P - len(job.prompt) :] = 1
        positions_RP = (mask_RP.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        names = [job.adapter for job in jobs]
        logits_R1V = self._forward(ids_RP, mask_RP, positions_RP, names, cache, keep_last=True)
        logits_RV = logits_R1V[:, -1]
        rows, source = [], []
        for r, job in enumerate(jobs):
            for i in range(job.num_samples):
                rows.append(Row(job, i, self._generator(job, i), length=len(job.prompt)))
                source.append(r)
        index = torch.tensor(source, device=self.device)
        self._advance(rows, logits_RV[index])
        now = time.perf_counter()
        for job in jobs:
            metrics.TIME_TO_FIRST_TOKEN.observe(now - job.submitted)
        select_rows(cache, index)
        self._batch.add(rows, cache, mask_RP[index])
        self._retire()

    def _decode(self) -> None:
        batch = self._batch
        ids_B1, mask_BL, positions_B1 = batch.step_inputs()
        names = [row.job.adapter for row in batch.rows]
        logits_BV = self._forward(ids_B1, mask_BL, positions_B1, names, batch.cache)[:, -1]
        batch.stepped(mask_BL)
        metrics.BATCH_SIZE.observe(len(batch))
        self._advance(batch.rows, logits_BV)
        self._retire()

    def _advance(self, rows: list[Row], logits_BV: torch.Tensor) -> None:
        """Sample each row's next token from its logits and append it."""
        options = [row.job.options for row in rows]
        tokens, logprobs = choose_tokens(logits_BV, options, [row.generator for row in rows])
        for row, token, logprob in zip(rows, tokens, logprobs, strict=True):
            row.tokens.append(token)
            row.logprobs.append(logprob)
        metrics.TOKENS_GENERATED.inc(len(rows))

    def _retire(self) -> None:
        """Drop finished sequences (and those of cancelled requests), then deliver them."""
        kept: list[int] = []
        finished: list[tuple[Row, StopReason]] = []
        for b, row in enumerate(self._batch.rows):
            if row.job.cancelled:
                continue
            assert row.job.stop is not None
            reason = row.job.stop(row.tokens)
            if reason is None:
                kept.append(b)
            else:
                finished.append((row, reason))
        self._batch.keep(kept)
        metrics.RUNNING_SEQUENCES.set(len(self._batch))
        for row, reason in finished:
            metrics.SEQUENCES_FINISHED.labels(reason).inc()
            row.job.emit((row.index, Completion(row.tokens, row.logprobs, reason)))

    def _forward(
        self,
        ids_BT: torch.Tensor,
        mask_BT: torch.Tensor,
        positions_BT: torch.Tensor | None,
        names: list[str],
        cache: DynamicCache | None,
        *,
        keep_last: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, V] of a batch whose row b uses adapter names[b] (T = 1 if keep_last)."""
        kwargs: dict[str, Any] = dict(
            input_ids=ids_BT,
            attention_mask=mask_BT,
            position_ids=positions_BT,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        if keep_last:
            kwargs["logits_to_keep"] = 1
        return self._bank.forward(names, **kwargs)

    def _logprobs(self, name: str, tokens: list[int]) -> list[float]:
        ids_1T = torch.tensor([tokens], device=self.device)
        with torch.inference_mode():
            logits_1TV = self._forward(ids_1T, torch.ones_like(ids_1T), None, [name], None)
            return target_logprobs(logits_1TV[:, :-1], ids_1T[:, 1:])[0].tolist()

    def _generator(self, job: SampleJob, index: int) -> torch.Generator | None:
        if job.options.temperature == 0:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed((job.seed + index) % (1 << 64))
        return generator

    def _fail_all(self, error: BaseException) -> None:
        with self._wake:
            inbox = list(self._inbox)
            self._inbox.clear()
        for job in [*self._waiting, *(row.job for row in self._batch.rows)]:
            job.emit(error)
        for item in inbox:
            if isinstance(item, SampleJob):
                item.emit(error)
            else:
                item.fail(error)
        self._waiting.clear()
        self._batch = DecodeBatch()


def _try_tokenizer(base_model: str) -> PreTrainedTokenizerBase | None:
    try:
        return load_tokenizer(base_model)
    except (OSError, ValueError) as exc:
        log.warning("no tokenizer: stop strings are refused", extra={"reason": str(exc)})
        return None


def _eos_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[int, ...]:
    """End-of-sequence ids of the model's generation config, config and tokenizer."""
    ids: set[int] = set()
    sources = [getattr(model, "generation_config", None), model.config]
    for source in sources:
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update([value] if isinstance(value, int) else list(value or []))
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))

"""Prometheus metrics of the sampler (prefix treadle_sampler_), served by the runtime's endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "treadle_sampler_requests", "Requests answered, by method and status code", ["method", "code"]
)
TOKENS_GENERATED = Counter("treadle_sampler_tokens_generated", "Tokens sampled")
SEQUENCES_FINISHED = Counter(
    "treadle_sampler_sequences_finished", "Sequences finished, by stop reason", ["reason"]
)
BATCH_SIZE = Histogram(
    "treadle_sampler_batch_size",
    "Sequences decoded together in one step",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
RUNNING_SEQUENCES = Gauge("treadle_sampler_running_sequences", "Sequences being decoded")
WAITING_REQUESTS = Gauge("treadle_sampler_waiting_requests", "Sample requests not yet admitted")
TIME_TO_FIRST_TOKEN = Histogram(
    "treadle_sampler_time_to_first_token_seconds",
    "From a sample request's arrival at the engine to its first sampled token",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADAPTER_CACHE_HITS = Counter(
    "treadle_sampler_adapter_cache_hits", "Requests whose adapter was already loaded"
)
ADAPTER_CACHE_MISSES = Counter(
    "treadle_sampler_adapter_cache_misses", "Requests whose adapter had to be fetched"
)
ADAPTER_LOADS = Counter("treadle_sampler_adapter_loads", "Adapters fetched and loaded")
ADAPTER_LOAD_SECONDS = Histogram(
    "treadle_sampler_adapter_load_seconds",
    "Fetch plus load time of one adapter",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADAPTER_EVICTIONS = Counter("treadle_sampler_adapter_evictions", "Adapters evicted from the cache")
ADAPTERS_LOADED = Gauge("treadle_sampler_adapters_loaded", "Adapters currently loaded")

"""Per-tenant quotas: concurrent training models and tokens waiting in queues.

A quota only ever refuses the tenant that exceeds it (RESOURCE_EXHAUSTED naming the quota); lack
of shared capacity never refuses anyone, it queues. Limits come from defaults in the scheduler
config (0 = unlimited) and per-tenant overrides in a JSON file:
`{"team-a": {"max_models": 4, "max_queued_tokens": 200000}}`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc

from treadle_runtime.errors import OpError

KEYS = ("max_models", "max_queued_tokens")


@dataclass(frozen=True)
class Limits:
    """One tenant's limits (0 = unlimited)."""

    max_models: int = 0
    max_queued_tokens: int = 0


class Quotas:
    """Limits per tenant and what each tenant uses now."""

    def __init__(self, default: Limits, overrides: dict[str, Limits] | None = None) -> None:
        self.default = default
        self.overrides = overrides or {}
        self.queued_tokens: Counter[str] = Counter()

    @classmethod
    def from_file(cls, default: Limits, path: str) -> Quotas:
        """Defaults plus the overrides in `path` (ValueError naming a bad entry)."""
        if not path:
            return cls(default)
        loaded = json.loads(Path(path).read_text())
        overrides = {}
        for tenant, limits in loaded.items():
            unknown = set(limits) - set(KEYS)
            if unknown:
                raise ValueError(f"quotas_file {path}: {tenant}: unknown keys {sorted(unknown)}")
            overrides[tenant] = Limits(**{k: int(v) for k, v in limits.items()})
        return cls(default, overrides)

    def limits(self, tenant: str) -> Limits:
        """The tenant's limits."""
        return self.overrides.get(tenant, self.default)

    def check_models(self, tenant: str, live_models: int) -> None:
        """Refuse one more model when the tenant is at its limit."""
        limit = self.limits(tenant).max_models
        if limit and live_models >= limit:
            raise OpError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"quota max_models: tenant {tenant!r} already has {live_models} models "
                f"(limit {limit}); release a training client first",
                "quota.max_models",
            )

    def reserve_tokens(self, tenant: str, tokens: int) -> None:
        """Count `tokens` as queued for the tenant, refusing them over its limit."""
        limit = self.limits(tenant).max_queued_tokens
        if limit and tokens and self.queued_tokens[tenant] + tokens > limit:
            raise OpError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"quota max_queued_tokens: tenant {tenant!r} has {self.queued_tokens[tenant]} "
                f"tokens queued; {tokens} more exceed its limit of {limit}",
                "quota.max_queued_tokens",
            )
        self.queued_tokens[tenant] += tokens

    def release_tokens(self, tenant: str, tokens: int) -> None:
        """The tokens left the queue (ran or failed)."""
        self.queued_tokens[tenant] = max(0, self.queued_tokens[tenant] - tokens)

"""Which queued requests go into the next cycle: deficit round robin between tenants, by tokens.

Every cycle has a token budget. Each tenant with queued work earns an equal share of it (its
quantum) per round and spends it on its requests' tokens; a tenant with a large backlog therefore
cannot crowd out one with a small request, and unused share carries over within the cycle.
Within a tenant, its models take turns; within a model, requests keep their seq_id order. Ops
without forward/backward tokens (optim_step, saves) cost nothing and ride along with their model.
A request larger than the whole budget still runs, alone, so nothing waits forever.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from treadle_scheduler.models import Request


@dataclass
class _TenantQueue:
    models: OrderedDict[str, deque[Request]] = field(default_factory=OrderedDict)
    deficit: int = 0

    def head(self) -> Request | None:
        for queue in self.models.values():
            if queue:
                return queue[0]
        return None

    def pop(self) -> Request:
        """The head request of the next model in turn (the model then goes to the back)."""
        model_id, queue = next((m, q) for m, q in self.models.items() if q)
        request = queue.popleft()
        self.models.move_to_end(model_id)
        if not queue:
            del self.models[model_id]
        return request


class FairQueue:
    """Ready requests of one trainer, grouped by tenant and model."""

    def __init__(self) -> None:
        self._tenants: OrderedDict[str, _TenantQueue] = OrderedDict()
        self._count = 0  # requests queued
        self._tokens = 0  # their tokens

    def push(self, tenant: str, request: Request) -> None:
        """Queue a request behind its model's earlier ones."""
        queue = self._tenants.get(tenant)
        if queue is None:
            queue = self._tenants[tenant] = _TenantQueue()
        model = queue.models.get(request.model_id)
        if model is None:
            model = queue.models[request.model_id] = deque()
        model.append(request)
        self._count += 1
        self._tokens += request.tokens

    def __len__(self) -> int:
        return self._count

    def tokens(self) -> int:
        """Tokens of all queued requests."""
        return self._tokens

    def drain(self) -> list[Request]:
        """Remove and return everything queued."""
        everything = [r for t in self._tenants.values() for q in t.models.values() for r in q]
        self._tenants.clear()
        self._count = self._tokens = 0
        return everything

    def take(self, budget: int) -> list[Request]:
        """The requests of the next cycle, at most `budget` tokens (unless one alone exceeds it)."""
        chosen: list[Request] = []
        while self._tenants and budget > 0:
            quantum = max(1, budget // len(self._tenants))
            progressed = False
            for tenant in list(self._tenants):
                queue = self._tenants[tenant]
                queue.deficit += quantum
                while (head := queue.head()) is not None:
                    if (
                        chosen
                        and head.tokens
                        and (head.tokens > queue.deficit or head.tokens > budget)
                    ):
                        break
                    request = queue.pop()
                    chosen.append(request)
                    queue.deficit -= request.tokens
                    budget -= request.tokens
                    progressed = True
                if queue.head() is None:
                    del self._tenants[tenant]  # an emptied queue keeps no credit
            if not progressed:
                heads = [t.head() for t in self._tenants.values()]
                if all(h is None or h.tokens > budget for h in heads):
                    break
        if self._tenants:  # the next cycle starts with the next tenant in line
            self._tenants.move_to_end(next(iter(self._tenants)))
        self._count -= len(chosen)
        self._tokens -= sum(r.tokens for r in chosen)
        return chosen

"""S3 lifecycle rules: the coarse, server-side backstop behind the exact expiry sweep.

Lifecycle rules count whole days from an object's creation and match by prefix or tag. The key
layout is by tenant and run, so TTLs are expressed as an object tag `treadle-expire-days=D`
(D from a fixed ladder) with one rule per D. D is the smallest rung at least one day beyond the
checkpoint's expiry, so the store never deletes anything before the sweep would: the sweep stays
the exact mechanism, and the rules still clean up if the service is down for days. SeaweedFS
accepts the rules without applying them; MinIO applies them.
"""

from __future__ import annotations

import math

from minio.commonconfig import ENABLED, Filter, Tag, Tags
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

TAG_KEY = "treadle-expire-days"
DAY_LADDER = (1, 2, 3, 7, 14, 30, 60, 90, 180, 365)
_DAY = 86400.0


def expire_days(created_at: float, expires_at: float | None) -> int | None:
    """The ladder rung for a checkpoint created at `created_at` expiring at `expires_at`."""
    if expires_at is None:
        return None
    needed = math.ceil(max(expires_at - created_at, 0.0) / _DAY) + 1
    return next((days for days in DAY_LADDER if days >= needed), None)


def object_tags(days: int | None) -> Tags | None:
    """Object tags carrying rung `days` (None: no tag, kept until deleted)."""
    if days is None:
        return None
    tags = Tags.new_object_tags()
    tags[TAG_KEY] = str(days)
    return tags


def lifecycle_config() -> LifecycleConfig:
    """One expiration rule per rung of the ladder."""
    rules = [
        Rule(
            ENABLED,
            rule_filter=Filter(tag=Tag(TAG_KEY, str(days))),
            rule_id=f"treadle-expire-{days}d",
            expiration=Expiration(days=days),
        )
        for days in DAY_LADDER
    ]
    return LifecycleConfig(rules)

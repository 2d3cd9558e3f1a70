"""Which tinker SDKs the gateway serves, and the client config that puts them on one path.

The SDK asks `client/config` first, with its version. Every generation from 0.24.1 on is served
and the tested ones are named in docs/api.md; an older SDK (which predates the protocol these
routes speak) is refused with the range, a newer one is served with a warning at session start.

The config answer makes every version take the same paths (fields an SDK does not know it
ignores): forward_backward as protobuf, and `forward` through it (`proto_write_fwdbwd`,
`fwd_via_fwdbwd`: tinker 0.24 would otherwise send JSON and a separate /forward), creating a
model from a checkpoint as one `load_weights` request addressed by session (tinker 0.24 to 0.33
would otherwise send weights_info, create_model and a load), no JWT exchange (API keys only).
The JSON and legacy paths are served too, for clients configured otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from treadle_gateway.errors import bad_input

OLDEST = (0, 24, 1)
TESTED = ("0.24.1", "0.25.0", "0.29.1", "0.33.1", "0.38.0")
NEWEST_TESTED = (0, 38, 0)
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def parse(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a version string, None if it is not one."""
    match = _VERSION.match(version.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def check(version: str) -> None:
    """Refuse an SDK this gateway cannot serve (400 naming sdk_version, with the range)."""
    parsed = parse(version)
    if parsed is None:
        raise bad_input("sdk_version", f"{version!r} is not a version (expected e.g. 0.38.0)")
    if parsed < OLDEST:
        raise bad_input(
            "sdk_version",
            f"tinker {version} is not supported: this gateway serves tinker 0.24.1 and later "
            f"(tested: {', '.join(TESTED)})",
        )


def warning(version: str) -> str | None:
    """A note for SDKs newer than the tested ones."""
    parsed = parse(version)
    if parsed is not None and parsed[:2] > NEWEST_TESTED[:2]:
        return (
            f"tinker {version} is newer than the versions this Treadle gateway was tested with "
            f"({', '.join(TESTED)}); please report anything that does not work"
        )
    return None


def client_config(proto_compress: bool, session_polling: bool) -> dict[str, Any]:
    """The `client/config` answer for every SDK version (module docstring)."""
    return {
        "pjwt_auth_enabled": False,
        "proto_write_fwdbwd": True,
        "fwd_via_fwdbwd": True,
        "proto_compress_fwdbwd": proto_compress,
        "parallel_fwdbwd_chunks": True,
        "create_model_via_load_weights": True,
        "sample_use_retrieve_futures": session_polling,
        "sample_join_sampling_session": False,
        "custom_loss_server_side": False,
    }

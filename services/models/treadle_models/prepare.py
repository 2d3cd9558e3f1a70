"""`python -m treadle_models.prepare MODEL...`: make base models ready to load before any service
starts, so that the first conversion of SmolLM2 from its GGUF runs once, here, and not in every
trainer and sampler at the same moment. `treadle up` runs it first (treadle_runtime.launcher).

Each MODEL is SOURCE or NAME=SOURCE (served.py). Every built-in source needs SmolLM2's cached
folder and nothing else (sources.py), and any other source is a local folder used as it is: so
with that folder complete there is nothing to do, and this answers without importing torch. A
malformed value is refused here either way; an unknown source then gets its error from the
service that loads it, and on a cold cache here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from treadle_models.cache import SMOLLM2_FOLDER, is_complete, model_folder
from treadle_models.served import served_model


def prepare(models: Sequence[str]) -> None:
    """Build what base models `models` need (ValueError for a malformed value,
    UnknownModelError for a source that is not served)."""
    for model in models:
        served_model(model)
    if is_complete(model_folder(SMOLLM2_FOLDER)):
        return
    from treadle_models.sources import prepare_model  # torch and transformers: seconds

    for model in models:
        prepare_model(model)


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the models named on the command line; the exit status says whether it worked."""
    names = list(sys.argv[1:] if argv is None else argv)
    if not names:
        print("usage: python -m treadle_models.prepare MODEL...", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        prepare(names)
    except (ValueError, OSError) as exc:  # UnknownModelError is a ValueError
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(f"prepare: {', '.join(names)} ready in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

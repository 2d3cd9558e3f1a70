"""One config dataclass per service, settable from CLI flags and environment variables alike.

Every field `some_field` of a service's dataclass is the flag `--some-field` and the variable
`TREADLE_<SERVICE>_SOME_FIELD`; a flag wins over the environment, the environment over the
default. Each field's one-line help is its `metadata["help"]`. A bad flag or value ends the
process with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A flag or environment value that cannot be used; the message names it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _field_type(tp: Any) -> type:
    """The concrete scalar type of a field annotation (unwrapping Optional)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    if tp not in (str, int, float, bool):
        raise TypeError(f"unsupported config field type {tp!r}")
    return typing.cast(type, tp)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(kind: type, text: str) -> Any:
    return _parse_bool(text) if kind is bool else kind(text)


def load_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    service: str,
) -> T:
    """Build `cls` from defaults, then `TREADLE_<SERVICE>_*` variables, then `--flags`."""
    env = os.environ if env is None else env
    prefix = f"TREADLE_{service.upper().replace('-', '_')}_"
    hints = typing.get_type_hints(cls)
    parser = _Parser(prog=f"treadle-{service}", description=cls.__doc__)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = _field_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        env_name = prefix + field.name.upper()
        help_text = f"{field.metadata.get('help', '')} [env {env_name}]"
        if env_name in env:
            try:
                values[field.name] = _convert(kind, env[env_name])
            except ValueError as exc:
                raise ConfigError(f"{env_name}: {exc}") from None

        def parse(text: str, kind: type = kind, flag: str = flag) -> Any:
            try:
                return _convert(kind, text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{kind.__name__} expected, got {text!r}"
                ) from None

        parse.__name__ = kind.__name__
        parser.add_argument(flag, dest=field.name, type=parse, default=None, help=help_text)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    for name, value in vars(args).items():
        if value is not None:
            values[name] = value
    try:
        config = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return config


def load_config_or_exit(cls: type[T], *, service: str, argv: Sequence[str] | None = None) -> T:
    """`load_config`, printing one line and exiting with status 2 on a bad flag or value."""
    try:
        return load_config(cls, argv, service=service)
    except ConfigError as exc:
        print(f"treadle-{service}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

"""Command-line parsing of job configs (tyro) and their JSON form."""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_HELP = ("-h", "--help")


def cli(
    presets: Mapping[str, tuple[str, T]],
    description: str | None = None,
    args: Sequence[str] | None = None,
    prog: str | None = None,
) -> T:
    """Parse ``python -m jobs.<name> [PRESET] [--field value ...]`` into a frozen config dataclass.

    The first positional word picks a preset of ``presets`` (a dict ``name -> (description, config)``);
    without one the first preset (conventionally ``"default"``) is used, so ``python -m jobs.x`` with no
    arguments runs. ``--field value`` overrides any field of the preset, nested fields with dots
    (``--run.name exp1 --ray.num-workers 2``). ``--help`` lists the presets; ``PRESET --help`` documents
    every field with its docstring and the preset's value.

    Args:
        presets: ``{name: (description, config)}``; the configs are frozen dataclass instances.
        description: text shown at the top of ``--help``.
        args: the arguments to parse (default ``sys.argv[1:]``).
        prog: program name shown in the help (default: ``python -m <module>``).

    Returns:
        The resolved config (same type as the preset).

    Raises:
        ValueError: if ``presets`` is empty.
        SystemExit: on ``--help`` or a command-line error (tyro prints the reason).
    """
    import tyro

    if not presets:
        raise ValueError("cli: presets must hold at least one (description, config) entry, got none")
    args = list(sys.argv[1:] if args is None else args)
    names = list(presets)
    if prog is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        prog = f"python -m {spec.name}" if spec is not None and spec.name else None
    if not args or (args[0] not in names and args[0] not in _HELP):
        args = [names[0], *args]
    return tyro.extras.overridable_config_cli(
        {k: presets[k] for k in names}, prog=prog, description=description, args=args
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready nested dict of a (frozen dataclass) config; unknown leaf types become their repr."""
    out = _jsonable(config)
    if not isinstance(out, dict):
        raise TypeError(f"config_to_dict: config must be a dataclass instance or a mapping, got {type(config)}")
    return out


def find_field(config: Any, field_type: type) -> tuple[str, Any] | None:
    """The first top-level field of ``config`` whose value is an instance of ``field_type``.

    Returns:
        ``(field_name, value)`` or None when the config has no such field.
    """
    if not dataclasses.is_dataclass(config):
        return None
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, field_type):
            return f.name, value
    return None

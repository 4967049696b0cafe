"""Stage configs to and from JSON-ready dicts: the one (de)serialisation helper.

Every stage config is a dataclass validated in its own `__post_init__`; what they share is
here: `to_dict` (nested dataclasses become dicts, tuples lists) and `from_dict` (nested
dataclass fields are rebuilt, an unknown key is refused in one line naming the key, the
class and where the dict came from).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pbd_deploy.errors import PbdError

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a config dataclass (nested dataclasses too, tuples as lists)."""
    return _plain(dataclasses.asdict(config))


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build the dataclass `cls` from `data` (what `to_dict` wrote); missing keys take defaults.

    Args:
        cls: the config dataclass.
        data: a mapping of field names to values; a field whose type is a dataclass (or such
            a dataclass or None) is built from its own mapping the same way.
        where: the file or context the dict comes from, named in errors
            (e.g. "base/config.json").

    Raises:
        PbdError: `data` is not a mapping, a key is not a field of `cls`, a required field is
            missing, or the config's own validation refuses a value.
    """
    context = f"{cls.__name__}" + (f" in {where}" if where else "")
    if not isinstance(data, Mapping):
        raise PbdError(f"{context} must be a mapping of options, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise PbdError(f"unknown option {key!r} for {context}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        nested = _dataclass_of(hints.get(key))
        if nested is not None and isinstance(value, Mapping):
            value = from_dict(nested, value, f"{where} ({key})" if where else key)
        values[key] = value
    missing = [n for n, f in fields.items() if n not in values and _required(f)]
    if missing:
        raise PbdError(f"{context} is missing {', '.join(repr(m) for m in missing)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise PbdError(f"bad {context}: {exc}") from None


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds: `X`, `X | None` or `Optional[X]`; else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        classes = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_workers(workers: int) -> None:
    """`--workers`: data loader processes, 0 = load in the main process."""
    if not isinstance(workers, int) or workers < 0:
        raise PbdError(f"--workers must be 0 (load in the main process) or more, got {workers}")

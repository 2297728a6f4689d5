"""Typed validation of plain data (parsed YAML or JSON) against Python types: the one validator behind the suite
file (:mod:`privbench.run.config`), defense and attack ``Params``, and the submission card
(:mod:`privbench.submit.card`).

Every problem raises ``error`` (an :class:`~privbench.core.errors.InputError` subclass) with ``where``: the file and
the field path, e.g. ``suite.yaml: defenses[1].params.sigma: expected a number, got str 'two'``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from privbench.core.errors import InputError

_NAMES = {bool: "true/false", float: "a number", int: "an integer", str: "a string", list: "a list",
          dict: "a mapping"}


def _wrong(value: Any, want: str, where: str, error: type[InputError]) -> InputError:
    return error(f"{where}: expected {want}, got {type(value).__name__} {value!r}")


def check_type(value: Any, tp: Any, where: str, error: type[InputError] = InputError) -> Any:
    """``value`` checked against ``tp`` and lightly coerced (int → float, list → tuple, mapping → dataclass).

    Handles ``Any``, ``Optional``/``Union``, ``tuple[T, ...]``, ``bool`` (never an int), ``float`` and ``int``
    (never a bool), ``str``, ``list``, ``dict`` (any mapping) and dataclasses (:func:`build_dataclass`); other types
    pass unchecked."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_type(value, a, where, error)
            except InputError as e:
                errors.append(e)
        raise errors[0] if errors else error(f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(value, "a list", where, error)
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(check_type(v, inner, f"{where}[{i}]", error) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(value, _NAMES[tp], where, error)
        return float(value)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _wrong(value, _NAMES[tp], where, error)
    if tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong(value, _NAMES[tp], where, error)
        return value
    if tp in (bool, str, list) and not isinstance(value, tp):
        raise _wrong(value, _NAMES[tp], where, error)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where, error)
    return value


def build_dataclass(cls: type, mapping: Any, where: str, error: type[InputError] = InputError) -> Any:
    """Frozen dataclass ``cls`` built from a mapping (``None``: all defaults); unknown keys, wrong types and the
    dataclass's own ``__post_init__`` errors raise ``error`` naming ``where``."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise error(f"{where}: expected a mapping, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise error(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields) or 'none'}")
    kwargs = {k: check_type(v, hints[k], f"{where}.{k}", error) for k, v in mapping.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # InputError included
        raise error(f"{where}: {e}") from None

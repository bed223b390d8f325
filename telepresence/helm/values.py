"""Helm values from the command line: ``-f/--values`` files, ``--set``, ``--set-string`` and
``--set-json``, merged the way ``helm`` merges them.

helm-sdkpy takes the values as one finished mapping, so the client parses Helm's flags itself.
The rules follow Helm's ``pkg/cli/values`` and ``pkg/strvals``, so a command line that works
with ``helm install`` means the same thing here:

- Sources are applied in a fixed order whatever their order on the command line: the values
  files, left to right, then every ``--set-json``, then ``--set``, then ``--set-string``. A
  later source wins; maps are merged key by key, anything else is replaced.
- ``--set a.b=v,c[0]=w,d={x,y}``: dots nest maps, ``[i]`` indexes lists (growing them with
  nulls), ``{x,y}`` is a list, commas separate assignments, and a backslash takes the next
  character literally (``a\\.b=1`` sets the key ``a.b``; ``x=a\\,b`` sets ``a,b``).
- ``--set`` types a value as Helm does: ``true``/``false`` (any case) are booleans, ``null``
  is null (which removes a chart default), an integer without a leading zero is an integer,
  anything else (``1.5``, ``010``, ``''``) a string. ``--set-string`` keeps every value a
  string; ``--set-json`` reads each value as JSON (``a=[1,2]``, ``a={"b":1}``), or takes one
  whole JSON object.

Nothing here does I/O except :func:`load_values_file`; errors are :class:`ValuesError`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from telepresence.helm.errors import ValuesError

__all__ = [
    "ValueSources",
    "coalesce",
    "load_values_file",
    "merge_maps",
    "parse_set",
    "parse_set_json",
]

type Values = dict[str, Any]

#: As Helm: the largest list index and the deepest nesting a --set may ask for.
MAX_INDEX = 65536
MAX_NESTING = 30
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class ValueSources:
    """The value flags of one command, in the order they were given per flag.

    Attributes:
        files: ``-f/--values`` paths (``-`` is standard input).
        set: ``--set`` assignments.
        set_string: ``--set-string`` assignments.
        set_json: ``--set-json`` assignments or JSON objects.
    """

    files: tuple[str, ...] = ()
    set: tuple[str, ...] = ()
    set_string: tuple[str, ...] = ()
    set_json: tuple[str, ...] = ()

    def resolve(self) -> Values:
        """The user-supplied values (not the chart's defaults), merged as Helm merges them.

        Raises:
            ValuesError: A file cannot be read or is not a YAML map, or an assignment is
                malformed.
        """
        values: Values = {}
        for path in self.files:
            values = merge_maps(values, load_values_file(path))
        for text in self.set_json:
            parse_set_json(text, values)
        for text in self.set:
            parse_set(text, values, flag="--set")
        for text in self.set_string:
            parse_set(text, values, string=True, flag="--set-string")
        return values


def load_values_file(path: str) -> Values:
    """A values file's map (an empty file is an empty map).

    Raises:
        ValuesError: It cannot be read, is not YAML, or is not a map.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        reason = error.strerror or error
        raise ValuesError(f"cannot read the values file {path}: {reason}") from error
    except UnicodeDecodeError as error:
        raise ValuesError(f"the values file {path} is not text: {error}") from error
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValuesError(f"the values file {path} is not valid YAML{at}: {problem}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValuesError(
            f"the values file {path} must hold a map of values, not a {_yaml_kind(loaded)}"
        )
    return loaded


def merge_maps(base: Values, overrides: Values) -> Values:
    """``overrides`` over ``base``: maps merged key by key, anything else replaced (Helm's
    ``MergeMaps``, used between values files and for a whole ``--set-json`` object)."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = merge_maps(current, value)
        else:
            merged[key] = value
    return merged


def coalesce(values: Values, defaults: Values) -> Values:
    """The values Helm renders with: ``values`` over the chart's ``defaults``, where a null
    value removes the default of that key."""
    merged = dict(defaults)
    for key, value in values.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            merged[key] = coalesce(value, current)
        else:
            merged[key] = _without_nulls(value)
    return merged


def parse_set(text: str, into: Values, *, string: bool = False, flag: str = "--set") -> None:
    """Apply one ``--set`` (or, with ``string``, ``--set-string``) argument to ``into``.

    Raises:
        ValuesError: The argument is malformed; the message quotes it.
    """
    parser = _SetParser(text, string=string)
    try:
        parser.assignments(into)
    except _SyntaxError as error:
        raise ValuesError(f"{flag} {text!r}: {error}") from None


def parse_set_json(text: str, into: Values) -> None:
    """Apply one ``--set-json`` argument to ``into``: ``key=JSON[,key=JSON...]``, or a whole
    JSON object merged over the values.

    Raises:
        ValuesError: The argument is malformed or a value is not JSON.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            whole = json.loads(stripped)
        except ValueError as error:
            raise ValuesError(f"--set-json {text!r}: not a JSON object: {error}") from None
        if not isinstance(whole, dict):
            raise ValuesError(f"--set-json {text!r}: not a JSON object")
        into.update(merge_maps(into, whole))
        return
    parser = _SetParser(text, json_values=True)
    try:
        parser.assignments(into)
    except _SyntaxError as error:
        raise ValuesError(f"--set-json {text!r}: {error}") from None


# -- Helm's strvals grammar ---------------------------------------------------------------------


class _SyntaxError(Exception):
    """A malformed assignment; the message says where."""


class _SetParser:
    """A cursor over one ``--set`` argument that writes what it reads into a values map.

    The grammar is Helm's: ``name(.name|[index])*=value`` assignments separated by commas,
    where a value is ``{item,item}``, a JSON document (for --set-json), or text up to the next
    unescaped comma.
    """

    def __init__(self, text: str, *, string: bool = False, json_values: bool = False) -> None:
        self._text = text
        self._at = 0
        self._string = string
        self._json = json_values

    def assignments(self, into: Values) -> None:
        while self._at < len(self._text):
            self._key(into, nesting=0)

    def _read_until(self, stops: str) -> tuple[str, str | None]:
        """The text up to the first unescaped character of ``stops`` (consumed), and that
        character; None at the end of the argument."""
        out: list[str] = []
        text = self._text
        while self._at < len(text):
            char = text[self._at]
            self._at += 1
            if char in stops:
                return "".join(out), char
            if char == "\\":
                if self._at == len(text):
                    return "".join(out), None
                char = text[self._at]
                self._at += 1
            out.append(char)
        return "".join(out), None

    def _key(self, data: Values, nesting: int) -> None:
        name, stop = self._read_until("=[,.")
        if stop is None:
            if name:
                raise _SyntaxError(f"key {name!r} has no value")
            return
        if stop == ",":
            raise _SyntaxError(f"key {name!r} has no value (cannot end with ,)")
        if stop == "=":
            _store(data, name, self._value())
            return
        if stop == "[":
            index = self._index()
            current = data.get(name, [])
            if not isinstance(current, list):
                raise _SyntaxError(f"{name!r} is a {_yaml_kind(current)}, not a list")
            _store(data, name, self._list_item(current, index, nesting))
            return
        # stop == ".": a nested map.
        nesting += 1
        if nesting > MAX_NESTING:
            raise _SyntaxError(f"names nest deeper than {MAX_NESTING} levels")
        inner = data.get(name, {})
        if not isinstance(inner, dict):
            raise _SyntaxError(f"{name!r} is a {_yaml_kind(inner)}, not a map")
        inner = dict(inner)
        self._key(inner, nesting)
        if not inner:
            raise _SyntaxError(f"key map {name!r} has no value")
        _store(data, name, inner)

    def _index(self) -> int:
        digits, stop = self._read_until("]")
        if stop is None:
            raise _SyntaxError(f"list index [{digits} is not closed with ]")
        if not _INTEGER.fullmatch(digits):
            raise _SyntaxError(f"list index [{digits}] is not a number")
        index = int(digits)
        if index < 0:
            raise _SyntaxError(f"negative list index [{index}]")
        if index > MAX_INDEX:
            raise _SyntaxError(f"list index [{index}] is larger than {MAX_INDEX}")
        return index

    def _list_item(self, items: list[Any], index: int, nesting: int) -> list[Any]:
        items = list(items)
        rest, stop = self._read_until("[.=")
        if rest:
            raise _SyntaxError(f"unexpected {rest!r} after the list index [{index}]")
        if stop is None:
            raise _SyntaxError(f"list item [{index}] has no value")
        if stop == "=":
            return _set_index(items, index, self._value())
        if stop == "[":
            inner_index = self._index()
            current = items[index] if index < len(items) else None
            if current is None:
                current = []
            if not isinstance(current, list):
                raise _SyntaxError(f"item [{index}] is a {_yaml_kind(current)}, not a list")
            return _set_index(items, index, self._list_item(current, inner_index, nesting))
        # stop == ".": the item is a map.
        current = items[index] if index < len(items) else None
        inner = dict(current) if isinstance(current, dict) else {}
        self._key(inner, nesting)
        return _set_index(items, index, inner)

    def _value(self) -> Any:
        if self._json:
            return self._json_value()
        text = self._text
        if self._at == len(text):
            return ""
        if text[self._at] == "{":
            self._at += 1
            return self._braced_list()
        raw, _ = self._read_until(",")
        return self._typed(raw)

    def _braced_list(self) -> list[Any]:
        items: list[Any] = []
        while True:
            raw, stop = self._read_until(",}")
            if stop is None:
                raise _SyntaxError("list must terminate with '}'")
            items.append(self._typed(raw))
            if stop == "}":
                if self._at < len(self._text) and self._text[self._at] == ",":
                    self._at += 1
                return items

    def _json_value(self) -> Any:
        if self._skip_blanks_and_comma():
            return None
        try:
            value, end = json.JSONDecoder().raw_decode(self._text, self._at)
        except ValueError as error:
            raise _SyntaxError(f"the value is not JSON: {error}") from None
        self._at = end
        if not self._skip_blanks_and_comma() and self._at < len(self._text):
            raise _SyntaxError(f"unexpected {self._text[self._at :]!r} after a JSON value")
        return value

    def _skip_blanks_and_comma(self) -> bool:
        """Skip blanks; consume a comma. True when the value is empty (comma or end)."""
        text = self._text
        while self._at < len(text) and text[self._at].isspace():
            self._at += 1
        if self._at == len(text):
            return True
        if text[self._at] == ",":
            self._at += 1
            return True
        return False

    def _typed(self, raw: str) -> Any:
        if self._string:
            return raw
        lowered = raw.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if lowered == "null":
            return None
        if raw == "0":
            return 0
        if raw and raw[0] != "0" and _INTEGER.fullmatch(raw) and int(raw) in _INT64:
            return int(raw)
        return raw


def _store(data: Values, key: str, value: Any) -> None:
    # As Helm: an empty name sets nothing (`--set .a=1`, `--set =1`).
    if key:
        data[key] = value


def _set_index(items: list[Any], index: int, value: Any) -> list[Any]:
    if len(items) <= index:
        items.extend([None] * (index + 1 - len(items)))
    items[index] = value
    return items


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _yaml_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__

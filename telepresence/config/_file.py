"""Reading ``config.yml``: YAML, then unknown keys, then the models.

The document is walked against the models first: a key no model knows is left out and
reported as a warning with its dotted path (a newer or an older client's key must not stop
this one), and a key without a value (``timeouts:`` alone, or ``endpointDial: ~``) counts as
not written. Only then do the models validate what is left, so ``model_fields_set`` names the
keys the file really set.

Everything that stops the file from being used is one :class:`ConfigError` line that names
the file, the dotted key and what is wrong with the value; a YAML syntax error names the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from telepresence.config._model import Config, describe
from telepresence.paths import config_path

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic_core import ErrorDetails

__all__ = ["ConfigError", "load_config", "parse_config"]


class ConfigError(ValueError):
    """``config.yml`` cannot be used; ``str()`` is one line naming the file and the key."""


def load_config(path: Path | None = None) -> tuple[Config, list[str]]:
    """Read ``config.yml`` (by default :func:`config_path`); a missing file is the defaults.

    Returns:
        The configuration, and one warning per key it ignored.

    Raises:
        ConfigError: The file cannot be read, is not YAML, or holds a bad value.
    """
    path = config_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(), []
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from error
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> tuple[Config, list[str]]:
    """Parse the text of a ``config.yml``; ``source`` names it in messages.

    Raises:
        ConfigError: Not YAML, or a bad value.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        raise ConfigError(f"{source}: {_yaml_problem(error)}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from error
    if document is None:
        return Config(), []
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {describe(document)}")
    warnings: list[str] = []
    known = _known_keys(Config, document, "", source, warnings)
    try:
        return Config.model_validate(known), warnings
    except ValidationError as error:
        problems = "; ".join(_problem(detail) for detail in error.errors())
        raise ConfigError(f"{source}: {problems}") from None


def _known_keys(
    model: type[BaseModel],
    document: Mapping[Any, Any],
    prefix: str,
    source: str,
    warnings: list[str],
) -> dict[str, Any]:
    """The keys of ``document`` that ``model`` has, recursively, without empty values."""
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    known: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        info = fields.get(key) if isinstance(key, str) else None
        if info is None:
            warnings.append(f"{source}: unknown key {path} (ignored)")
        elif value is not None:
            section = info.annotation
            if isinstance(section, type) and issubclass(section, BaseModel):
                known[key] = _section_keys(section, value, f"{path}.", source, warnings)
            else:
                known[key] = value
    return known


def _section_keys(
    model: type[BaseModel], value: object, prefix: str, source: str, warnings: list[str]
) -> object:
    """A sub-section's known keys; anything but a mapping is left for its model to refuse."""
    if isinstance(value, Mapping):
        return _known_keys(model, value, prefix, source, warnings)
    return value


def _problem(detail: ErrorDetails) -> str:
    """``timeouts.endpointDial: '3 parsecs' is not a duration (...)``."""
    where = ""
    for part in detail["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f"{'.' if where else ''}{part}"
    value = detail.get("input")
    match detail["type"]:
        case "config":
            what = detail["msg"]
        case "list_type":
            what = f"expected a list, got {describe(value)}"
        case "string_type":
            what = f"expected a string, got {describe(value)}"
        case "dict_type" | "model_type" | "model_attributes_type":
            what = f"expected a mapping, got {describe(value)}"
        case _:
            what = f"{detail['msg']} (got {describe(value)})"
    return f"{where}: {what}" if where else what


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = " ".join(part for part in (error.context, error.problem) if part)
    return f"{where}not valid YAML: {problem or error}"

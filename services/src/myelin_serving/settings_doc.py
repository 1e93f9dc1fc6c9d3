"""How a setting is shown to people: its variable, type, default and description, read from the
pydantic models in settings.py. `myelin-serve --help` and the settings reference
(docs/reference/settings.md, scripts/gen_docs.py) both use these, so each is written once."""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from myelin_serving.settings import Settings

PREFIX = "MYELIN_"


@dataclass(frozen=True)
class Setting:
    path: tuple[str, ...]  # ("batching", "max_batch_size")
    field: FieldInfo

    @property
    def variables(self) -> list[str]:
        """MYELIN_BATCHING__MAX_BATCH_SIZE; an aliased field's own names (a setting with an older name too)."""
        alias = self.field.validation_alias
        if isinstance(alias, AliasChoices):
            return [str(choice) for choice in alias.choices]
        if isinstance(alias, str):
            return [alias]
        return [PREFIX + "__".join(self.path).upper()]

    @property
    def description(self) -> str:
        if not self.field.description:
            raise ValueError(f"setting {'.'.join(self.path)} has no Field(description=...)")
        return self.field.description

    @property
    def type(self) -> str:
        return type_text(self.field.annotation) + bounds_text(self.field)

    @property
    def default(self) -> str:
        """The default as a variable would spell it; '(computed)' when a factory decides it."""
        if self.field.default_factory is not None:
            return "(computed)"
        return value_text(self.field.default)


def settings(
    model: type[BaseModel] = Settings, path: tuple[str, ...] = (), *, nested: bool = True
) -> Iterator[Setting]:
    """Every leaf setting of `model`; nested models expanded (their variables take `__`) unless
    `nested` is false."""
    for name, field in model.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if nested:
                yield from settings(inner, (*path, name))
        else:
            yield Setting((*path, name), field)


def sections() -> list[tuple[str, type[BaseModel]]]:
    """("", Settings) for the top-level settings, then (key, model) for each nested section
    (MYELIN_<KEY>__*): the core's, and each installed family's own where families are plug-ins."""
    found: dict[str, type[BaseModel]] = {"": Settings}
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found[name] = field.annotation
    try:
        plugins = importlib.import_module("myelin_serving.families")
    except ModuleNotFoundError:  # families listed in the server, their settings nested in Settings
        return list(found.items())
    for name in plugins.names():
        family = plugins.load_family(name)
        if getattr(family, "settings", None) is not None:
            found.setdefault(family.settings_section, family.settings)
    return list(found.items())


def setting(name: str) -> Setting:
    """One top-level setting by field name."""
    return Setting((name,), Settings.model_fields[name])


def type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(value) for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        text = " | ".join(type_text(a) for a in parts)
        return text + " (optional)" if len(parts) < len(get_args(annotation)) else text
    if origin is not None and get_args(annotation):  # list[str], Annotated[list[str], ...]
        if origin is list:
            return f"list of {type_text(get_args(annotation)[0])}"
        return type_text(get_args(annotation)[0])
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(field: FieldInfo) -> str:
    """The field's bounds (pydantic keeps ge=, le=... as annotated_types objects in its metadata)."""
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [
        f"{mark} {value_text(getattr(meta, attr))}"
        for meta in field.metadata
        for attr, mark in marks.items()
        if getattr(meta, attr, None) is not None
    ]
    return f", {', '.join(found)}" if found else ""


def value_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ",".join(value_text(v) for v in value) or "empty"
    return str(value)


def flag_help(name: str) -> str:
    """A myelin-serve flag's help: the setting's description, its variable and its default."""
    entry = setting(name)
    default = entry.default
    said = "" if default in ("unset", "(computed)") else f", default {default}"
    return f"{entry.description} ({', '.join(entry.variables)}{said})"


def flag_type(name: str) -> Any:
    """What argparse converts a flag's value with: the setting's own type, without `| None`."""
    annotation = Settings.model_fields[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation not in (int, float, str, Path):
        raise TypeError(f"setting {name} ({annotation}) cannot be a flag")
    return annotation

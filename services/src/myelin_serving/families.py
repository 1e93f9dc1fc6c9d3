"""The model families this installation serves, found through entry points.

A family is a plug-in: one entry point in the `myelin_serving.families` group names its `Family`
object (services/pyproject.toml: `name = "package.module:FAMILY"`), and any installed distribution
may add one. Nothing in the core names a family: `myelin-serve NAME`, the settings, the `make up`
stack and the health check all ask here.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from myelin_serving.family import Family

GROUP = "myelin_serving.families"


def _entry_points() -> dict[str, EntryPoint]:
    # Read each time: a distribution installed (or put on sys.path) since is seen at once.
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def names() -> list[str]:
    """The installed families, by name."""
    return sorted(_entry_points())


def load_family(name: str) -> Family:
    """The family `name`; ValueError naming the installed ones when there is none of that name."""
    entry = _entry_points().get(name)
    if entry is None:
        raise ValueError(f"unknown service {name!r}; choose one of: {', '.join(names()) or 'none installed'}")
    family = entry.load()
    if not isinstance(family, Family) or family.name != name:
        raise ValueError(f"entry point {name} = {entry.value} ({GROUP}) is not the Family named {name!r}")
    return family


def by_port() -> list[str]:
    """The installed families, by default port (the order `make up` starts them in)."""
    return sorted(names(), key=lambda name: load_family(name).default_port)

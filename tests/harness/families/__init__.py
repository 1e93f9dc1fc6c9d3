"""The families the shared suites run: one module here per family, found by listing this package.

Each module holds `CASE` (a `harness.rpcs.ServiceCase`: the reliability suites: bad input,
properties, auth sweep, faults), `workload()` (the soak's well-formed requests) and `smoke(client,
data_dir)` (the compose test's call through the SDK). A family that lands joins every suite with its
module here; docs/reliability.md says what a case holds.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from google.protobuf.message import Message
from hypothesis import strategies as st

from harness.rpcs import Bad, Request, ServiceCase
from harness.strategies import shared_fuzz
from myelin_client import Client


def _modules() -> dict[str, ModuleType]:
    found = (importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__))
    return {module.CASE.family: module for module in found}


MODULES = _modules()
CASES: dict[str, ServiceCase] = {family: module.CASE for family, module in MODULES.items()}
WORKLOADS: dict[str, Callable[[], list[Request]]] = {family: module.workload for family, module in MODULES.items()}
SMOKE: dict[str, Callable[[Client, Path], str]] = {family: module.smoke for family, module in MODULES.items()}


def bad_inputs(cases: Iterable[ServiceCase] = CASES.values()) -> list[tuple[str, Bad]]:
    return [(case.family, bad) for case in cases for bad in case.all_bad()]


def fuzz_targets(cases: Iterable[ServiceCase] = CASES.values()) -> list[tuple[str, str, st.SearchStrategy[Message]]]:
    return [(case.family, method, strategy) for case in cases for method, strategy in (*case.fuzz, *shared_fuzz(case))]

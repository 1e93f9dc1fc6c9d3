"""Discovery: the model versions a repository holds, each read on its own, manifests parsed once per change.

Layout (what training writes): <root>/<model-name>/<version>/model.json plus the ONNX graphs and
side files the manifest names. The rules (docs/reliability.md, "The model repository"):

- The folder names are the truth, as in Triton: a model folder's name is the model's name (letters,
  digits, '.', '_', '-', starting with a letter or digit, at most 128 characters), a version
  folder's name is its version (a decimal number from 1 to 2**63 - 1, ASCII digits, no leading
  zero). A manifest that says another name or version (a folder copied with `cp -r m/1 m/2`) is
  served under the folder's, with one WARNING naming both.
- Hidden entries (`.staging-*`, a training job's work in progress) and plain files are skipped
  silently; other folders whose names break the rules are skipped with one WARNING each.
- Everything must resolve inside the repository: a model folder that is a symlink leading outside
  is skipped with a WARNING; a version folder, or a file in one, that leads outside makes that
  version FAILED. Symlinks that stay inside are followed.
- A version whose manifest cannot be used (unreadable, not UTF-8, not JSON, nested too deep, over
  MAX_MANIFEST_BYTES, invalid) is a `BrokenVersion`: the service shows it FAILED with the reason,
  and every other version and model is read as if it were not there. A folder without a manifest
  is not a version (yet).
- A manifest is parsed once per change of the file (inode, size, modification time), and each
  problem is logged once when it appears or changes, not on every rescan.

Blocking (file system): `Scanner.scan` runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from myelin_serving.errors import InvalidArgument

log = logging.getLogger("myelin_serving.repository")

MANIFEST = "model.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"[1-9][0-9]{0,18}")  # ASCII only (str.isdigit() accepts '²' and '٣')
MAX_VERSION = 2**63 - 1  # the proto's int64
# The largest manifest read: training writes a few kilobytes; GetModel returns it whole.
MAX_MANIFEST_BYTES = 1024 * 1024


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class GraphEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # A manifest may only point at files inside its own version folder.
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"graph file {value!r} must be a plain file name inside the version folder")
        return value


class Manifest(BaseModel):
    """The fields services rely on; everything else in model.json is kept and shown as-is."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = 1
    name: str
    version: int
    family: str
    architecture: str = ""
    graphs: dict[str, GraphEntry]
    labels: list[str] = []
    evaluation: dict[str, Any] = {}
    serving: dict[str, Any] = {}


@dataclass(frozen=True)
class ModelVersion:
    """One version folder on disk, with its parsed manifest."""

    name: str  # the model folder's name
    version: int  # the version folder's name
    path: Path
    manifest: Manifest
    manifest_json: str  # the manifest file as compact JSON (what GetModel returns)
    fingerprint: str  # changes when any file of the folder changes

    def graph_path(self, graph: str) -> Path:
        return self.path / self.manifest.graphs[graph].file


@dataclass(frozen=True)
class BrokenVersion:
    """A version folder that cannot be served as it is: FAILED with `reason` until its files change."""

    name: str
    version: int
    path: Path
    reason: str
    fingerprint: str
    family: str | None  # when the manifest still says it


Entry = ModelVersion | BrokenVersion


def check_name(name: str) -> str:
    if not name:
        raise InvalidArgument("model.name is required")
    if not NAME_RE.fullmatch(name):  # not match: `$` would let a trailing newline through
        raise InvalidArgument(
            f"{name[:80]!r} is not a valid model name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


@dataclass
class _Parsed:
    """A manifest file as last read: its stat key, and the manifest or why it cannot be used."""

    key: tuple[int, int, int]
    manifest: Manifest | None
    manifest_json: str
    problem: str
    family: str | None


@dataclass
class Scanner:
    """Reads a repository for one family; keeps what it parsed and what it reported between scans."""

    root: Path
    family: str
    _parsed: dict[Path, _Parsed] = field(default_factory=dict)
    _reported: dict[str, str] = field(default_factory=dict)  # where -> the message logged about it
    _seen: dict[str, tuple[int, str]] = field(default_factory=dict)  # this scan's notes

    def scan(self) -> dict[str, dict[int, Entry]]:
        """Every version of this family under the root: its own, and the broken ones it may own.

        Raises OSError when the root itself cannot be listed (the caller keeps what it serves)."""
        self._seen = {}
        found: dict[str, dict[int, Entry]] = {}
        parsed, self._parsed = self._parsed, {}
        if not self.root.is_dir():
            self._note(str(self.root), logging.WARNING, f"the model repository {self.root} is not a folder (yet)")
        else:
            root = self.root.resolve()
            for model_dir in sorted(self.root.iterdir()):
                try:
                    versions = self._model(model_dir, root, parsed)
                except Exception as exc:  # one odd entry must not stop the scan
                    self._note(str(model_dir), logging.ERROR, f"skipping {model_dir}: {type(exc).__name__}: {exc}")
                    continue
                if versions:
                    found[model_dir.name] = versions
        self._flush()
        return found

    def _model(self, model_dir: Path, root: Path, parsed: dict[Path, _Parsed]) -> dict[int, Entry]:
        name = model_dir.name
        if name.startswith(".") or not model_dir.is_dir():
            return {}
        if not NAME_RE.fullmatch(name):
            self._note(str(model_dir), logging.WARNING, f"skipping {str(model_dir)!r}: not a valid model name")
            return {}
        if not model_dir.resolve().is_relative_to(root):
            self._note(
                str(model_dir),
                logging.WARNING,
                f"skipping {model_dir}: it leads to {model_dir.resolve()}, outside the repository",
            )
            return {}
        entries: dict[int, Entry] = {}
        for folder in sorted(model_dir.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if not VERSION_RE.fullmatch(folder.name) or int(folder.name) > MAX_VERSION:
                self._note(
                    str(folder),
                    logging.WARNING,
                    f"skipping {str(folder)!r}: a version folder is named by its version, a number from 1 to "
                    f"{MAX_VERSION} in ASCII digits without a leading zero",
                )
                continue
            number = int(folder.name)
            try:
                entry = self._version(name, number, folder, root, parsed)
            except Exception as exc:
                entry = BrokenVersion(name, number, folder, f"{type(exc).__name__}: {exc}", "", None)
            if entry is not None:
                entries[number] = entry
        families = {e.manifest.family if isinstance(e, ModelVersion) else e.family for e in entries.values()}
        # A broken version that cannot say its family belongs to the model's family; when no version
        # says it, every service shows it (any of them could be its owner).
        orphans_here = self.family in families or families <= {None}

        def ours(entry: Entry) -> bool:
            if isinstance(entry, ModelVersion):
                return entry.manifest.family == self.family
            return entry.family == self.family if entry.family is not None else orphans_here

        return {number: entry for number, entry in entries.items() if ours(entry)}

    def _version(self, name: str, number: int, path: Path, root: Path, parsed: dict[Path, _Parsed]) -> Entry | None:
        fingerprint, outside = _fingerprint(path, root)
        if outside:
            return BrokenVersion(name, number, path, f"{outside} leads outside the repository", fingerprint, None)
        manifest_path = path / MANIFEST
        try:
            st = manifest_path.stat()
        except FileNotFoundError:
            return None  # not a version (yet)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = parsed.get(manifest_path)
        self._parsed[manifest_path] = known if known is not None and known.key == key else _parse(manifest_path, key)
        found = self._parsed[manifest_path]
        if found.manifest is None:
            return BrokenVersion(name, number, path, found.problem, fingerprint, found.family)
        manifest = found.manifest
        if manifest.family == self.family and (manifest.name, manifest.version) != (name, number):
            self._note(
                str(manifest_path),
                logging.WARNING,
                f"{manifest_path} describes {manifest.name}/{manifest.version}; the folder names win: "
                f"serving it as {name}/{number}",
            )
        return ModelVersion(name, number, path, manifest, found.manifest_json, fingerprint)

    def _note(self, where: str, level: int, message: str) -> None:
        self._seen[where] = (level, message)

    def _flush(self) -> None:
        """Log what is new or changed since the last scan; forget what went away."""
        for where, (level, message) in self._seen.items():
            if self._reported.get(where) != message:
                log.log(level, "%s", message)
        self._reported = {where: message for where, (_, message) in self._seen.items()}


def _fingerprint(path: Path, root: Path) -> tuple[str, str]:
    """(a digest of every file's name, inode, size and mtime; the first entry leading outside `root`, or "")."""
    if not path.resolve().is_relative_to(root):
        return "", f"{path} (-> {path.resolve()})"
    digest = hashlib.sha256()
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(root):
            return "", f"{entry.path} (-> {Path(entry.path).resolve()})"
        if entry.is_file():
            st = entry.stat()
            digest.update(f"{entry.name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest(), ""


def _parse(path: Path, key: tuple[int, int, int]) -> _Parsed:
    size = key[1]
    if size > MAX_MANIFEST_BYTES:
        return _Parsed(key, None, "", f"{MANIFEST} is {size:,} bytes; the limit is {MAX_MANIFEST_BYTES:,}", None)
    try:
        text = path.read_bytes()[: MAX_MANIFEST_BYTES + 1].decode("utf-8")
        raw = json.loads(text)
    except UnicodeDecodeError as exc:
        return _Parsed(key, None, "", f"{MANIFEST} is not UTF-8 text: {exc}", None)
    except RecursionError:
        return _Parsed(key, None, "", f"unreadable {MANIFEST}: nested too deeply", None)
    except (OSError, ValueError) as exc:
        return _Parsed(key, None, "", f"unreadable {MANIFEST}: {exc}", None)
    family = raw.get("family") if isinstance(raw, dict) and isinstance(raw.get("family"), str) else None
    try:
        manifest = Manifest.model_validate(raw)
        compact = json.dumps(raw, separators=(",", ":"))
    except ValidationError as exc:
        # Each problem with where it is ("graphs.model.file: ..."), not pydantic's "1 validation error" header.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())
        return _Parsed(key, None, "", f"invalid {MANIFEST}: {problems}", family)
    except RecursionError:
        return _Parsed(key, None, "", f"unreadable {MANIFEST}: nested too deeply", family)
    return _Parsed(key, manifest, compact, "", family)

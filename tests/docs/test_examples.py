"""The README's and the docs' examples are true of the code.

- Every code block marked `<!-- run: FAMILY ... -->` on the line before it runs against real services
  of those families (models trained in the test session): Python blocks as a script, shell blocks with
  `bash -e`, from the repository root. Addresses on the families' default ports (gRPC 127.0.0.1:50051...,
  HTTP 51051...) are pointed at the test services, and so is every `myelin` command that names no
  `--target`. An example fails on a non-zero exit, on printing nothing, and on an HTTP error body.
- In every shell block of every page, each `myelin`, `myelin-serve`, `myelin-train FAMILY` and
  `myelin-eval FAMILY` command may only use flags its parser has, `make` only targets the Makefile
  has, and `python FILE` only files that exist: a renamed flag or target fails here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.servers import BIN, REPO_ROOT, ServerThread, settings_for
from myelin_client import default_target
from myelin_serving.settings import HTTP_PORT_OFFSET as HTTP_OFFSET

PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])
MARKER = re.compile(r"<!--\s*run:\s*([a-z ]+?)\s*-->")
SHELL = {"sh", "bash", "console", "shell"}
FAMILIES = ("classifier", "translator", "generator", "embedder")
# A shell line's words that stand for a value the reader fills in, or syntax around commands.
PLACEHOLDER = re.compile(r"^[A-Z_]+=|^\[|^\]")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    families: tuple[str, ...]  # from the run marker; empty: not run

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        start, close = i, fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(close))
        previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.fullmatch(previous.strip())
        families = tuple(marker.group(1).split()) if marker else ()
        code = "\n".join(lines[start + 1 : end]) + "\n"
        yield Block(page, start + 1, fence.group(2), code, families)
        i = end + 1


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [block for block in ALL_BLOCKS if block.families]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.language in SHELL]


def test_the_pages_have_runnable_examples() -> None:
    """The README's SDK and CLI examples, and the SDK page's, are among those that run."""
    pages = {block.page.relative_to(REPO_ROOT).as_posix() for block in RUNNABLE}
    assert {"README.md", "docs/sdk.md", "docs/getting-started.md"} <= pages
    for block in RUNNABLE:
        assert block.language in SHELL | {"python"}, f"{block}: only python and shell blocks run"
        assert set(block.families) <= set(FAMILIES), f"{block}: unknown family in {block.families}"


# Flags, targets and files ----------------------------------------------------------------------


@functools.cache
def command_help(command: str) -> str:
    """The --help text of one installed command line ("myelin translate", "myelin-train cnn")."""
    program, *sub = command.split()
    answer = subprocess.run([BIN / program, *sub, "--help"], capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, f"{command} --help failed:\n{answer.stderr}"
    return answer.stdout


@functools.cache
def options(command: str) -> frozenset[str]:
    """The option strings a command's parser accepts, from its --help."""
    return frozenset(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", command_help(command)))


@functools.cache
def make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([a-z][\w-]*):", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE))


def commands(code: str) -> Iterator[list[str]]:
    """Each simple command of a shell block as words: continuations joined, comments dropped, split
    at ; && || | and loop keywords, leading VAR=value assignments and `flock LOCK` removed."""
    # Backslash continuations, and synopsis lines that go on indented with more options.
    text = re.sub(r"\\\n|\n\s+(?=\[|--)", " ", code)
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in a synopsis line: check what splits
            words = line.split("#")[0].split()
        command: list[str] = []
        for word in [*words, ";"]:
            if word in (";", "&&", "||", "|", "&", "do", "done", "then", "fi") or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    command.append(word[:-1])
                while command and (re.match(r"^[A-Z_]+=", command[0]) or command[0] in ("for", "in")):
                    command = command[1:]
                if command[:1] == ["flock"]:
                    command = command[2:]
                if command:
                    yield command
                command = []
            else:
                command.append(word)


def problems(command: list[str]) -> Iterator[str]:
    program = Path(command[0]).name
    if program in ("myelin-train", "myelin-eval"):
        if len(command) < 2 or command[1].startswith("-"):
            return
        program = f"{program} {command[1]}"
        args = command[2:]
    elif program in ("myelin", "myelin-serve", "myelin-console"):
        args = command[1:]
        subcommand = next((a for a in args if a in myelin_commands()), None)
        if program == "myelin" and subcommand:
            program = f"myelin {subcommand}"
    elif program == "make":
        for target in (a for a in command[1:] if "=" not in a and not a.startswith("-")):
            if target not in make_targets():
                yield f"make has no target {target!r}"
        return
    elif program.startswith("python") and len(command) > 1 and command[1].endswith(".py"):
        if not (REPO_ROOT / command[1]).is_file():
            yield f"no file {command[1]}"
        return
    else:
        return
    known = options(program) | (options("myelin") if program.startswith("myelin ") else frozenset())
    for word in args:
        flag = word.strip("[]").split("=")[0].rstrip(".")
        if flag.startswith("-") and len(flag) > 1 and not flag[1].isdigit() and flag not in known:
            yield f"{program} has no flag {flag}"


@functools.cache
def myelin_commands() -> frozenset[str]:
    """The `myelin` subcommands, from the CLI's parser (as the reference lists them)."""
    choices = re.search(r"\{([a-z,-]+)\}", command_help("myelin"))
    assert choices is not None, "myelin --help lists no subcommands"
    return frozenset(choices.group(1).split(","))


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=str)
def test_shell_commands_use_real_flags_and_targets(block: Block) -> None:
    found = [f"{' '.join(c)}: {p}" for c in commands(block.code) for p in problems(c)]
    assert not found, f"{block}:\n" + "\n".join(found)


# Running the marked blocks ----------------------------------------------------------------------


def docs_embedder_repository(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """word2vec-skipgram and word2vec-cbow (the demo's names), dry runs on Tiny Shakespeare, whose first
    20,000 words have the examples' king, man, woman and house (the english preset's do not)."""
    from myelin_training.word2vec.train import main as train_word2vec

    repository = tmp_path_factory.mktemp("docs-embedder") / "repository"
    runs = tmp_path_factory.mktemp("docs-embedder-runs")
    corpus = data_dir / "text" / "tinyshakespeare" / "input.txt"
    for arch in ("skipgram", "cbow"):
        train_word2vec(
            ["--dry-run", "--publish", "--corpus", str(corpus), "--data-dir", str(data_dir),
             "--repository", str(repository), "--run-dir", str(runs / arch), "--arch", arch]
        )  # fmt: skip
    return repository


class Services:
    """One service per family with both ports on (gRPC and HTTP), started when a block first needs it."""

    def __init__(self, request: pytest.FixtureRequest, data_dir: Path, tmp: pytest.TempPathFactory) -> None:
        self._request, self._data_dir, self._tmp = request, data_dir, tmp
        self._started: dict[str, ServerThread] = {}
        self._stack = contextlib.ExitStack()

    def get(self, family: str) -> ServerThread:
        if family not in self._started:
            if family == "embedder":
                repository = docs_embedder_repository(self._data_dir, self._tmp)
            else:
                repository = self._request.getfixturevalue(f"{family}_repository")
            settings = settings_for(repository, service=family, http_port=0)
            self._started[family] = self._stack.enter_context(ServerThread(settings))
        return self._started[family]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def services(
    request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    started = Services(request, data_dir, tmp_path_factory)
    yield started
    started.close()


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `myelin` first on the PATH that sends a command without --target to the test service of
    its family (the address the real CLI would pick, looked up in MYELIN_DOCS_TARGETS)."""
    folder = tmp_path_factory.mktemp("docs-bin")
    script = folder / "myelin"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from google.protobuf import descriptor_pool\n"
        "from myelin_client import cli, default_target\n"
        "args = cli.build_parser().parse_args(sys.argv[1:])\n"
        "if not args.target:\n"
        "    try:  # the service the command calls, and so its family (models, health: the classifier's)\n"
        "        name = getattr(args, 'service', '') or cli.CLASSIFIER\n"
        "        service = descriptor_pool.Default().FindServiceByName(name)\n"
        "        wanted = default_target(Path(service.file.name).stem)\n"
        "    except (KeyError, ValueError):\n"
        "        wanted = default_target('classifier')\n"
        "    targets = json.loads(os.environ['MYELIN_DOCS_TARGETS'])\n"
        "    if wanted not in targets:\n"
        "        sys.exit(f'this example calls {wanted}, a family its run marker does not name')\n"
        "    os.environ['MYELIN_TARGET'] = targets[wanted]\n"
        "cli.main()\n"
    )
    script.chmod(0o755)
    return folder


def addresses(family: str, server: ServerThread) -> dict[str, str]:
    """The addresses a page writes for a family's default ports -> the test service's."""
    grpc_default = default_target(family)
    port = int(grpc_default.rsplit(":", 1)[1])
    http = server.http_url.removeprefix("http://")
    return {
        grpc_default: server.target,
        f"127.0.0.1:{port + HTTP_OFFSET}": http,
        f"localhost:{port + HTTP_OFFSET}": http,
    }


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=str)
def test_example_runs(block: Block, services: Services, wrapper: Path) -> None:
    replaced: dict[str, str] = {}
    for family in block.families:
        replaced |= addresses(family, services.get(family))
    code = block.code
    for written, actual in replaced.items():
        code = code.replace(written, actual)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    env["MYELIN_DOCS_TARGETS"] = json.dumps({default_target(f): services.get(f).target for f in block.families})
    env["PATH"] = os.pathsep.join([str(wrapper), str(BIN), env.get("PATH", "")])
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    said = f"{block} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, said
    assert done.stdout.strip(), f"{block} printed nothing"
    # An HTTP answer that is an error (curl exits 0 on a 404) fails the example too.
    assert '"error"' not in done.stdout, said

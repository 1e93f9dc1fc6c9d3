"""What the training jobs print, run as a user runs them (the `myelin-train` command): no torch export
warnings, no progress-bar carriage returns in a log, counts in plain English, and a time-budgeted
run's progress bar that follows its budget."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

from harness.servers import BIN

TRAIN = str(BIN / "myelin-train")


def logged(*args: str | Path) -> str:
    """stdout and stderr of `myelin-train ARGS` into pipes (as into a log file), on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([TRAIN, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_log_gets_lines_not_warnings_or_carriage_returns(data_dir: Path, tmp_path: Path) -> None:
    common = ["--dry-run", "--data-dir", data_dir, "--repository", tmp_path / "r"]
    translator = logged("translator", *common, "--run-dir", tmp_path / "t")
    generator = logged("generator", "--arch", "gru", *common, "--run-dir", tmp_path / "g")
    word2vec = logged("word2vec", "--corpus-preset", "english", *common, "--run-dir", tmp_path / "w")
    for output in (translator, generator, word2vec):
        assert "Warning" not in output and "will not be used" not in output, output
        assert "\r" not in output, "a progress bar wrote to a log"
    assert re.search(r"translator-tatoeba-dry-run: [\d,]+ parameters, 1 epoch of ~[\d,]+ steps?,", translator)
    assert "1 thread," in translator and "1 thread\n" in generator and " 1 threads" not in translator + generator
    (epoch,) = [line for line in word2vec.splitlines() if line.startswith("epoch 1:")]
    assert re.search(r"words_per_second [\d,]+, train_seconds \d+\.\d,", epoch), epoch


def test_a_time_budget_run_bar_follows_its_budget(data_dir: Path, tmp_path: Path) -> None:
    """On a terminal: a 3-second budget with a million iterations allowed ends at 100%, not at 0.03%
    with hours to go."""
    command = [TRAIN, "generator", "--arch", "gru", "--dry-run", "--data-dir", str(data_dir)]
    command += ["--repository", str(tmp_path / "r"), "--run-dir", str(tmp_path / "g")]
    command += ["--max-iters", "1000000", "--time-budget", "0.05"]
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # tqdm reads the width
    process = subprocess.Popen(command, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    bars = [
        part for part in re.split(r"[\r\n]", screen) if re.match(r"generator-gru-shakespeare-dry-run: +\d+%\|", part)
    ]
    assert bars, screen
    assert re.search(r"100%\|", bars[-1]), bars[-1]
    assert not any(re.search(r"<\d+:\d\d:\d\d", bar) for bar in bars), "an ETA in hours for a 3-second budget"

"""Replicas of one family on this machine, for the replica tests and the scale-out benchmark.

Each replica is a `myelin-serve` process bound to a loopback address of its own (127.0.0.1,
127.0.0.2, ...) on one port that all of them share, as replicas behind a DNS name are; the SDK's
target names them all: `ipv4:127.0.0.1:P,127.0.0.2:P,...`. Beside them:

- `channel_attempts`: what gRPC's channelz counts in this process for the client's channel: the
  calls the application made, and the attempts each replica's subchannel carried (retries and the
  health-check Watch streams included), read through grpcio-channelz's servicer, in-process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_channelz.v1 import channelz_pb2
from grpc_channelz.v1.channelz import ChannelzServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from myelin_serving.launch import serve_command, wait_ports

HOSTS = tuple(f"127.0.0.{i}" for i in range(1, 9))


def shared_port(hosts: tuple[str, ...], tries: int = 50) -> int:
    """A port free on every one of `hosts` at this moment (port 0 cannot give one port on several
    addresses): bind the first on port 0, then the others on the port it got; try again on a clash."""
    for _ in range(tries):
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                s = socket.socket()
                sockets.append(s)
                s.bind((host, sockets[0].getsockname()[1] if len(sockets) > 1 else 0))
            port: int = sockets[0].getsockname()[1]
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise OSError(f"no port free on all of {', '.join(hosts)} after {tries} tries")


@dataclass
class Replica:
    """One `myelin-serve` on host:port; its HTTP port (with /metrics) on a free port of the same host."""

    family: str
    host: str
    port: int
    repository: Path
    state: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    http_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state / f"{self.family}-{self.host}.log"

    def start(self, timeout: float = 60) -> None:
        port_file = self.state / f"{self.family}-{self.host}.port"
        port_file.unlink(missing_ok=True)
        command = serve_command(
            self.family, self.repository, host=self.host, port=self.port, http_port=0, port_file=port_file
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        ports = wait_ports(port_file, self.process, timeout)
        if ports is None:
            raise RuntimeError(f"myelin-serve on {self.address} did not start:\n{self.log()[-2000:]}")
        self.http_port = ports["http_port"]

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:  # SERVING
                        return
                except grpc.RpcError:
                    pass
                if not self.alive or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.address} never became SERVING:\n{self.log()[-2000:]}")
                time.sleep(0.1)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.alive:
            self.send(signal.SIGKILL)
            self.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`, from the replica's /metrics."""
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


class ReplicaSet:
    """`count` replicas of `family` on 127.0.0.1 ... 127.0.0.<count>, one shared port."""

    def __init__(self, family: str, repository: Path, state: Path, count: int, env: dict[str, str]) -> None:
        self.family, self.repository, self.state, self.env = family, repository, state, env
        self.hosts = HOSTS[:count]
        self.port = 0
        self.replicas: list[Replica] = []

    def start(self, tries: int = 5) -> ReplicaSet:
        """Start every replica and wait until each is SERVING; a new port if another process took it."""
        self.state.mkdir(parents=True, exist_ok=True)
        for attempt in range(tries):
            self.port = shared_port(self.hosts)
            self.replicas = [
                Replica(self.family, host, self.port, self.repository, self.state, self.env) for host in self.hosts
            ]
            try:
                for replica in self.replicas:
                    replica.start()
                break
            except RuntimeError:
                self.close()
                if attempt == tries - 1:
                    raise
        for replica in self.replicas:
            replica.wait_serving()
        return self

    @property
    def target(self) -> str:
        return "ipv4:" + ",".join(r.address for r in self.replicas)

    def restart(self, index: int) -> Replica:
        """A fresh process in place of replica `index` (same address and port), SERVING."""
        old = self.replicas[index]
        old.kill()
        fresh = Replica(self.family, old.host, old.port, self.repository, self.state, self.env)
        fresh.start()
        fresh.wait_serving()
        self.replicas[index] = fresh
        return fresh

    def close(self) -> None:
        for replica in self.replicas:
            replica.kill()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Counts:
    started: int
    succeeded: int
    failed: int


def channel_attempts(target: str) -> tuple[Counts, dict[str, Counts]]:
    """channelz's counts for this process's channel to `target`: (the calls the application made,
    {address: the attempts that replica's subchannel carried})."""
    servicer = ChannelzServicer()  # its queries read this process's channelz data; no server needed
    channels = servicer.GetTopChannels(channelz_pb2.GetTopChannelsRequest(start_channel_id=0), None).channel
    (channel,) = [c for c in channels if c.data.target == target]
    per_address = {}
    for ref in channel.subchannel_ref:
        sub = servicer.GetSubchannel(channelz_pb2.GetSubchannelRequest(subchannel_id=ref.subchannel_id), None)
        data = sub.subchannel.data
        per_address[data.target.removeprefix("ipv4:")] = Counts(
            data.calls_started, data.calls_succeeded, data.calls_failed
        )
    data = channel.data
    return Counts(data.calls_started, data.calls_succeeded, data.calls_failed), per_address

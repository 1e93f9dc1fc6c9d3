#!/opt/myelin/bin/python
"""Container health check: exit 0 when the service in this container says SERVING over grpc.health.v1.

Docker's HEALTHCHECK runs it inside the service image (as `myelin-healthcheck`); it asks the port the
service listens on, from the same MYELIN_* settings, so compose and Kubernetes set nothing twice:
MYELIN_PORT when set, else the default port of the family the container serves (the argument of
`myelin-serve`, the container's first process). Kubernetes uses its own gRPC probes instead. Exit
codes follow Docker: 0 healthy, 1 unhealthy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from myelin_serving.families import load_family, names
from myelin_serving.settings import Settings


def served_family(settings: Settings) -> str:
    """The family `myelin-serve` serves in this container (its first process), else the settings' one."""
    try:
        arguments = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return settings.service
    if not any(part.endswith("myelin-serve") for part in arguments[:2]):
        return settings.service
    return next((part for part in arguments if part in names()), settings.service)


def main() -> int:
    settings = Settings()
    port = settings.port if settings.port is not None else load_family(served_family(settings)).default_port
    # The service may bind 0.0.0.0 or a specific address; loopback reaches it in both cases.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "[::]", "::") else settings.host
    target = f"{host}:{port}"
    # Plaintext only: with MYELIN_TLS_* set, override the HEALTHCHECK (or use Kubernetes' gRPC probes).
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())

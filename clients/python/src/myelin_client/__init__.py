"""myelin_client: the Python SDK for Myelin's gRPC services.

    from myelin_client import Client

    with Client("127.0.0.1:50051") as client:
        client.wait_ready()
        print(client.classify("digit.png").labels)
        for chunk in client.generate("ROMEO:", max_new_tokens=100, temperature=0.8):
            print(chunk.text, end="", flush=True)

`Client` blocks, `AsyncClient` awaits; both have the same methods. Errors: see myelin_client.errors.
"""

from myelin_client.aio import AsyncClient
from myelin_client.client import Client
from myelin_client.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    MyelinError,
    NotFoundError,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
)
from myelin_client.streams import AsyncGenerationStream, GenerationStream
from myelin_client.types import (
    Classification,
    ClassifyResult,
    Completion,
    GenerationChunk,
    LabelProbability,
    ModelInfo,
    ReloadResult,
    TensorSpec,
    VersionStatus,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncGenerationStream",
    "CancelledError",
    "Classification",
    "ClassifyResult",
    "Client",
    "Completion",
    "DeadlineExceededError",
    "GenerationChunk",
    "GenerationStream",
    "InvalidArgumentError",
    "LabelProbability",
    "ModelInfo",
    "MyelinError",
    "NotFoundError",
    "ReloadResult",
    "ResourceExhaustedError",
    "ServerError",
    "TensorSpec",
    "UnauthenticatedError",
    "UnavailableError",
    "VersionStatus",
]

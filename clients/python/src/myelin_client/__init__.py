"""myelin_client: the Python SDK for Myelin's gRPC services.

    from myelin_client import Client

    with Client("127.0.0.1:50051") as client:
        client.wait_ready()
        print(client.classify("digit.png").labels)
        for chunk in client.generate("ROMEO:", max_new_tokens=100, temperature=0.8):
            print(chunk.text, end="", flush=True)
        print(client.translate("I am cold.", beam_size=4).texts)

`Client` blocks, `AsyncClient` awaits; both have the same methods. Errors: see myelin_client.errors.
`default_target("translator")` is where a family's service listens by default (127.0.0.1:50052).
"""

from myelin_client._diagnosis import default_target
from myelin_client.aio import AsyncClient
from myelin_client.client import Client
from myelin_client.errors import (
    CancelledError,
    ClientClosedError,
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
    AnalogyAnswer,
    AnalogyResult,
    Batching,
    Beam,
    Classification,
    ClassifyResult,
    Completion,
    DoesntMatchResult,
    EmbedResult,
    GenerationChunk,
    GenerationOptions,
    LabelProbability,
    ModelInfo,
    Neighbour,
    NeighboursResult,
    PairSimilarity,
    ReloadResult,
    ScoreResult,
    SimilarityResult,
    TensorSpec,
    TranslateResult,
    Translation,
    VersionStatus,
    WordVector,
)

__version__ = "0.1.0"

__all__ = [
    "AnalogyAnswer",
    "AnalogyResult",
    "AsyncClient",
    "AsyncGenerationStream",
    "Batching",
    "Beam",
    "CancelledError",
    "Classification",
    "ClassifyResult",
    "Client",
    "ClientClosedError",
    "Completion",
    "DeadlineExceededError",
    "DoesntMatchResult",
    "EmbedResult",
    "GenerationChunk",
    "GenerationOptions",
    "GenerationStream",
    "InvalidArgumentError",
    "LabelProbability",
    "ModelInfo",
    "MyelinError",
    "Neighbour",
    "NeighboursResult",
    "NotFoundError",
    "PairSimilarity",
    "ReloadResult",
    "ResourceExhaustedError",
    "ScoreResult",
    "ServerError",
    "SimilarityResult",
    "TensorSpec",
    "TranslateResult",
    "Translation",
    "UnauthenticatedError",
    "UnavailableError",
    "VersionStatus",
    "WordVector",
    "default_target",
]

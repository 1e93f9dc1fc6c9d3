from myelin_api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("model", "words")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., words: _Optional[_Iterable[str]] = ...) -> None: ...

class WordVector(_message.Message):
    __slots__ = ("word", "found", "index", "values")
    WORD_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    word: str
    found: bool
    index: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, word: _Optional[str] = ..., found: _Optional[bool] = ..., index: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "dim", "vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    dim: int
    vectors: _containers.RepeatedCompositeFieldContainer[WordVector]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dim: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[WordVector, _Mapping]]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("word", "index", "score")
    WORD_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    word: str
    index: int
    score: float
    def __init__(self, word: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class MostSimilarRequest(_message.Message):
    __slots__ = ("model", "positive", "negative", "positive_vectors", "negative_vectors", "top_k", "restrict_vocab")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    positive: _containers.RepeatedScalarFieldContainer[str]
    negative: _containers.RepeatedScalarFieldContainer[str]
    positive_vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    negative_vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    top_k: int
    restrict_vocab: int
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., positive: _Optional[_Iterable[str]] = ..., negative: _Optional[_Iterable[str]] = ..., positive_vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., negative_vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., top_k: _Optional[int] = ..., restrict_vocab: _Optional[int] = ...) -> None: ...

class MostSimilarResponse(_message.Message):
    __slots__ = ("model", "neighbours")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ...) -> None: ...

class AnalogyQuestion(_message.Message):
    __slots__ = ("a", "b", "c")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    c: str
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ..., c: _Optional[str] = ...) -> None: ...

class AnalogyRequest(_message.Message):
    __slots__ = ("model", "questions", "top_k", "restrict_vocab")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    questions: _containers.RepeatedCompositeFieldContainer[AnalogyQuestion]
    top_k: int
    restrict_vocab: int
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., questions: _Optional[_Iterable[_Union[AnalogyQuestion, _Mapping]]] = ..., top_k: _Optional[int] = ..., restrict_vocab: _Optional[int] = ...) -> None: ...

class AnalogyAnswer(_message.Message):
    __slots__ = ("candidates", "unknown_words")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_WORDS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Neighbour]
    unknown_words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., unknown_words: _Optional[_Iterable[str]] = ...) -> None: ...

class AnalogyResponse(_message.Message):
    __slots__ = ("model", "answers")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    answers: _containers.RepeatedCompositeFieldContainer[AnalogyAnswer]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., answers: _Optional[_Iterable[_Union[AnalogyAnswer, _Mapping]]] = ...) -> None: ...

class WordPair(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: str
    second: str
    def __init__(self, first: _Optional[str] = ..., second: _Optional[str] = ...) -> None: ...

class SimilarityRequest(_message.Message):
    __slots__ = ("model", "pairs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    pairs: _containers.RepeatedCompositeFieldContainer[WordPair]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., pairs: _Optional[_Iterable[_Union[WordPair, _Mapping]]] = ...) -> None: ...

class PairSimilarity(_message.Message):
    __slots__ = ("found", "similarity", "unknown_words")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_WORDS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    similarity: float
    unknown_words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, found: _Optional[bool] = ..., similarity: _Optional[float] = ..., unknown_words: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarityResponse(_message.Message):
    __slots__ = ("model", "similarities")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITIES_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    similarities: _containers.RepeatedCompositeFieldContainer[PairSimilarity]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., similarities: _Optional[_Iterable[_Union[PairSimilarity, _Mapping]]] = ...) -> None: ...

class DoesntMatchRequest(_message.Message):
    __slots__ = ("model", "words")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., words: _Optional[_Iterable[str]] = ...) -> None: ...

class DoesntMatchResponse(_message.Message):
    __slots__ = ("model", "word", "similarities")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    SIMILARITIES_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    word: str
    similarities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., word: _Optional[str] = ..., similarities: _Optional[_Iterable[float]] = ...) -> None: ...

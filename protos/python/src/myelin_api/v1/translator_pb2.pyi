from myelin_api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TranslateRequest(_message.Message):
    __slots__ = ("model", "sentences", "beam_size", "max_length", "length_penalty", "truncate", "return_beams")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    RETURN_BEAMS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    sentences: _containers.RepeatedScalarFieldContainer[str]
    beam_size: int
    max_length: int
    length_penalty: float
    truncate: bool
    return_beams: bool
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., sentences: _Optional[_Iterable[str]] = ..., beam_size: _Optional[int] = ..., max_length: _Optional[int] = ..., length_penalty: _Optional[float] = ..., truncate: _Optional[bool] = ..., return_beams: _Optional[bool] = ...) -> None: ...

class Beam(_message.Message):
    __slots__ = ("text", "score", "log_probability", "tokens", "finished")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    log_probability: float
    tokens: int
    finished: bool
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ..., log_probability: _Optional[float] = ..., tokens: _Optional[int] = ..., finished: _Optional[bool] = ...) -> None: ...

class Translation(_message.Message):
    __slots__ = ("text", "score", "log_probability", "tokens", "source_truncated", "finished", "beams")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    BEAMS_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    log_probability: float
    tokens: int
    source_truncated: bool
    finished: bool
    beams: _containers.RepeatedCompositeFieldContainer[Beam]
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ..., log_probability: _Optional[float] = ..., tokens: _Optional[int] = ..., source_truncated: _Optional[bool] = ..., finished: _Optional[bool] = ..., beams: _Optional[_Iterable[_Union[Beam, _Mapping]]] = ...) -> None: ...

class TranslateResponse(_message.Message):
    __slots__ = ("model", "translations")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRANSLATIONS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    translations: _containers.RepeatedCompositeFieldContainer[Translation]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., translations: _Optional[_Iterable[_Union[Translation, _Mapping]]] = ...) -> None: ...

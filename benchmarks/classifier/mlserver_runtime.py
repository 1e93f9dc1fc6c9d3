"""The minimal MLServer custom runtime the benchmark compares against: one onnxruntime session, the
V2 request decoded with MLServer's NumpyCodec, the probabilities encoded back with it.

Runs inside .bench/mlserver-venv (MLServer's own dependencies), never inside .venv. The session
gets the same options as Myelin's (threads, no spinning), passed through model-settings.json.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxClassifier(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 0))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            await get_model_uri(self.settings), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        image = NumpyCodec.decode_input(payload.inputs[0])  # (B, 28, 28) float32
        (probabilities,) = self._session.run([self._output], {self._input: image})  # (B, 10)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(self._output, probabilities)],
        )

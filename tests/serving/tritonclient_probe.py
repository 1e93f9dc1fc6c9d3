"""Drive a server with the stock `tritonclient.grpc` or `tritonclient.http` and print what it answered, as JSON.

Runs in its own virtualenv (.venv-tritonclient, built by `make setup`): tritonclient registers the
`inference.*` messages in protobuf's default pool, as our generated `myelin_api.kserve.v2` does,
so the two cannot share a process, and tritonclient 2.73 requires protobuf < 7 (we pin 7.x).
The test (test_kserve_tritonclient.py) sends a job on stdin and asserts on the report; this
script makes no judgement of its own.

Job: {"target", "protocol": "grpc" (default) | "http", "binary": true (default) | false (http only:
      tensors as binary data or as JSON, both ways), "ssl": {"root_certificates", "private_key",
      "certificate_chain": PEM paths} | null, "headers": {...}, "models": [{"name", "version",
      "inputs": [{"name", "datatype", "shape", "data": base64 raw little-endian bytes}],
      "outputs": [names]}], "repository": [{"op": "index" | "config" | "load" | "unload", "name",
      "version", "ready"}]}
The repository steps (the model repository extension) run in order after the models, each answer
in report["repository"].
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc
import tritonclient.http
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def attempt(call: Any) -> dict[str, Any]:
    try:
        return {"ok": call()}
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message()}


def array_of(spec: dict[str, Any]) -> np.ndarray:
    data = base64.b64decode(spec["data"])
    if spec["datatype"] == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            length = int.from_bytes(data[offset : offset + 4], "little")
            items.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return np.array(items, dtype=np.object_).reshape(spec["shape"])
    return np.frombuffer(data, dtype=triton_to_np_dtype(spec["datatype"])).reshape(spec["shape"])


def infer(client: Any, job: dict[str, Any], model: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    triton = tritonclient.http if job.get("protocol") == "http" else tritonclient.grpc
    # Over HTTP: binary tensor data (tritonclient's default) or JSON, for the inputs and the outputs.
    binary = {"binary_data": job.get("binary", True)} if triton is tritonclient.http else {}
    inputs = []
    for spec in model["inputs"]:
        tensor = triton.InferInput(spec["name"], spec["shape"], spec["datatype"])
        tensor.set_data_from_numpy(array_of(spec), **binary)
        inputs.append(tensor)
    names = model.get("outputs") or []
    if not names and binary and not binary["binary_data"]:  # JSON outputs must be asked for by name
        metadata = client.get_model_metadata(model["name"], model.get("version", ""), headers=headers)
        names = [out["name"] for out in metadata["outputs"]]
    outputs = [triton.InferRequestedOutput(name, **binary) for name in names] or None
    result = client.infer(
        model["name"],
        inputs,
        model_version=model.get("version", ""),
        outputs=outputs,
        headers=headers,
        request_id="probe-1",
    )
    response = result.get_response()
    if not isinstance(response, dict):  # gRPC: a ModelInferResponse
        response = MessageToDict(response, preserving_proto_field_name=True)
    return {
        "model_name": response["model_name"],
        "model_version": response["model_version"],
        "id": response.get("id", ""),
        # HTTP only: how each output came back (binary data, or JSON values).
        "binary": {out["name"]: "binary_data_size" in out.get("parameters", {}) for out in response["outputs"]},
        "outputs": {
            out["name"]: {
                "datatype": out["datatype"],
                "shape": [int(d) for d in out["shape"]],
                "values": result.as_numpy(out["name"]).astype(np.float64).ravel().tolist()
                if out["datatype"] != "BYTES"
                else [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy(out["name"]).ravel()],
            }
            for out in response["outputs"]
        },
    }


def connect(job: dict[str, Any]) -> Any:
    ssl = job.get("ssl")
    if job.get("protocol") != "http":
        return tritonclient.grpc.InferenceServerClient(
            job["target"],
            ssl=ssl is not None,
            **(ssl or {}),  # file paths, as tritonclient takes them
        )
    if ssl is None:
        return tritonclient.http.InferenceServerClient(job["target"])

    def context() -> Any:  # geventhttpclient wants gevent's SSLContext
        import gevent.ssl

        created = gevent.ssl.create_default_context(cafile=ssl["root_certificates"])
        if ssl.get("certificate_chain"):
            created.load_cert_chain(ssl["certificate_chain"], ssl["private_key"])
        return created

    return tritonclient.http.InferenceServerClient(job["target"], ssl=True, ssl_context_factory=context)


def repository_step(client: Any, step: dict[str, Any], headers: dict[str, str], as_json: dict[str, bool]) -> Any:
    if step["op"] == "index":
        return client.get_model_repository_index(headers=headers, **as_json)
    if step["op"] == "config":
        return client.get_model_config(step["name"], step.get("version", ""), headers=headers, **as_json)
    if step["op"] == "load":
        return client.load_model(step["name"], headers=headers)
    return client.unload_model(step["name"], headers=headers)


def main() -> None:
    job = json.load(sys.stdin)
    client = connect(job)
    headers = job.get("headers") or {}
    as_json = {} if job.get("protocol") == "http" else {"as_json": True}  # http answers dicts anyway
    report: dict[str, Any] = {
        "live": attempt(lambda: client.is_server_live(headers=headers)),
        "ready": attempt(lambda: client.is_server_ready(headers=headers)),
        "server_metadata": attempt(lambda: client.get_server_metadata(headers=headers, **as_json)),
        "models": [],
    }
    for model in job["models"]:
        version = model.get("version", "")
        report["models"].append(
            {
                "name": model["name"],
                "ready": attempt(lambda m=model, v=version: client.is_model_ready(m["name"], v, headers=headers)),
                "metadata": attempt(
                    lambda m=model, v=version: client.get_model_metadata(m["name"], v, headers=headers, **as_json)
                ),
                "infer": attempt(lambda m=model: infer(client, job, m, headers)) if model.get("inputs") else None,
            }
        )
    report["repository"] = [
        attempt(lambda s=step: repository_step(client, s, headers, as_json)) for step in job.get("repository", [])
    ]
    client.close()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()

"""The HTTP door beside gRPC: one port per service, on Starlette and uvicorn, in the gRPC server's
event loop (one process, one loop), in front of the same models, batchers and schedulers.

- `routes.py`: the route table the core and each family fill (`Family.add_routes`), and the one
  wrapper each route gets: bearer token, deadline, error mapping through `errors.STATUS_CODES`,
  metrics, access log.
- `responses.py`: JSON answers, the error table's answers, server-sent events (`EventStream`).
- `body.py`: request bodies bounded before they are read, and JSON.
- `app.py`: the ASGI application: the core's routes (health, `/metrics`, KServe REST, `/v1/models`)
  and JSON answers for unknown routes.
- `kserve.py`: the Open Inference Protocol over REST (KServe v2), through `InferenceProtocol`.
- `rpc.py`: every gRPC method as JSON (`POST /rpc/<service>/<method>`), server-sent events for streams.
- `openai.py`: what the OpenAI-compatible routes share (errors, server-sent events, `/v1/models`).
- `server.py`: uvicorn on a socket bound up front, started and stopped with the gRPC server.
"""

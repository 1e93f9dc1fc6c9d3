"""Streams of generated text: iterate chunks as they arrive, then read the Completion.

    with client.generate("ROMEO:", max_new_tokens=200) as stream:
        for chunk in stream:
            print(chunk.text, end="", flush=True)
    print(stream.completion.finish_reason)

Leaving the `with` block (or calling `cancel()`) early cancels the call, and the service stops
generating for it within one decoding step.
"""

from myelin_client.aio import AsyncGenerationStream
from myelin_client.client import GenerationStream

__all__ = ["AsyncGenerationStream", "GenerationStream"]

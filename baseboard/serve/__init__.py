"""`baseboard serve`: an OpenAI-compatible HTTP server over the engine.

engine_loop.py   the engine loop: one thread steps the LLMEngine for every HTTP request
async_engine.py  the server's side of it: submit, outputs per request, the waiting bound
engine_process.py  the loop in a child process (what `baseboard serve` runs)
request_stream.py  what a handler reads of its request: CompletionDeltas per step
protocol.py      the request bodies (pydantic) and their SamplingParams
responses.py     response bodies and stream chunks
metrics.py       the Prometheus metrics
app.py           the FastAPI app: routes, errors, the API key
server.py        uvicorn on a socket bound beforehand

The server's packages (fastapi, uvicorn, prometheus-client: ``pip install baseboard[serve]``)
are imported by these modules only, never by the rest of baseboard.
"""

"""`baseboard serve` under a bounded load over the loopback, against offline `LLM.generate`
on the same prompts in the same run.

For each concurrency C: a server in its own process (`--max-num-seqs C`) gets a fixed number
of streamed greedy completions, at most C in flight, from --clients processes (each with its
share of C and of the prompts: one Python client parsing every chunk of a fast server
saturates its core), each event's JSON parsed by hand over the openai package's own HTTP
library (--client http), or through openai.AsyncOpenAI (--client openai: its pydantic model
per chunk cost 8 client processes 9.3 CPU-s for 24576 tokens on the H200's host, against 4.2
over plain HTTP); then `LLM.generate` runs the same prompts in another process with
`max_num_seqs=C` (continuous batching keeps C sequences running, as the server's queue
does). Both warm up first on 4 C other prompts, then run the timed load --rounds times (the
same server, the same LLM). Reported, each side's median round: output tokens per second and
their ratio; from the streams, time to first token (TTFT), inter-token latency (ITL: the
gaps between chunks) and time per output token of each request (TPOT: its decode time over
its tokens after the first), as p50/p90/p99; the CPU seconds the clients spent, since on a
small CPU they compete with the server; and those of the server's process (HTTP, streams,
text) and of its engine process (the steps), apart, over the timed load: a server process
that spent about the run's length bounds the throughput (the engine's count includes the
time CUDA spins waiting for the GPU, so it is near the run's length either way on a GPU).
Linux only (/proc).

    python benchmarks/serve.py [--model smollm2 | --shape qwen2.5-0.5b] [--concurrency 8,32]
        [--requests 64] [--prompt-len 64] [--max-tokens 64] [--dtype auto] [--platform P]
        [--max-model-len N] [--threads N] [--clients N] [--client http|openai]
        [--rounds 3] [--time-limit 600] [--json PATH] [--smoke]

--model is anything `baseboard serve` loads (default: the embedded smollm2); --shape builds
random bf16 weights of a shape from e2e_gpu_workers.py (qwen2.5-0.5b, llama3-8b, tiny) with
a word-level tokenizer over the whole vocabulary, so that every generated token is one
word of text; prompts are --prompt-len random token ids, sent as ids. --smoke: the tiny shape in
float32, a few requests at concurrency 2 and 4, to check the script in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"baseboard serve: listening on (http://\S+)")
SERVED_NAME = "bench"
TEXT = ("Paged attention stores keys and values in fixed-size blocks, so that a server can "
        "hold many requests at once and hand their memory back the moment one of them ends. "
        "Continuous batching mixes the prefills of new requests with the decodes of running "
        "ones in every step, which keeps the device busy while clients come and go. The "
        "quick brown fox jumps over the lazy dog while Paris remains the capital of France.")


# --- prompts and checkpoints ---------------------------------------------------------------


def text_prompts(count: int, words: int, tag: str) -> list[str]:
    """``count`` distinct prompts of about ``words`` words (their first words differ, so no
    two share a cached prefix block)."""
    corpus = TEXT.split()
    return [f"{tag} {i}: " + " ".join((corpus * (words // len(corpus) + 2))[i:i + words])
            for i in range(count)]


def id_prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """``count`` prompts of exactly ``length`` random token ids (sent as ids, as the
    completions API allows, so that no tokenizer version can change their length)."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 100) for _ in range(length)] for _ in range(count)]


def build_random_checkpoint(shape: str, directory: Path) -> None:
    """Random bf16 weights of ``shape`` (e2e_gpu_workers.py's) and a word-level tokenizer
    with one word per id ("w0" .. "wN") and no end-of-sequence token: every completion runs
    to max_tokens, and every token is text in the stream."""
    import torch
    from e2e_gpu_workers import SHAPES, make_checkpoint
    from tokenizers import Tokenizer, models, pre_tokenizers

    make_checkpoint(shape, str(directory), "cuda" if torch.cuda.is_available() else "cpu")
    vocab = SHAPES[shape]["vocab_size"]
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # the plain tokenizer.json and the class to load it with: read alike by every
    # transformers 5 release (a save_pretrained of 5.18 gave empty encodings under 5.17)
    words.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model: str, engine_flags: list[str], timeout: float) -> Server:
    """`baseboard serve` on 127.0.0.1 with a free port; waits for its listening line."""
    command = [sys.executable, "-m", "baseboard.cli", "serve", model, "--host", "127.0.0.1",
               "--port", "0", "--served-model-name", SERVED_NAME, *engine_flags]
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               errors="replace")
    server = Server(process, "")
    found = threading.Event()

    def read_stderr() -> None:  # drained to the end, so that the server never blocks on it
        for line in process.stderr:
            server.log.append(line.rstrip())
            match = LISTENING.search(line)
            if match and not found.is_set():
                server.url = match.group(1).rstrip("/")
                found.set()
        found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    found.wait(timeout)
    if not server.url:
        server.stop()
        tail = "\n".join(server.log[-30:])
        raise SystemExit(f"`{' '.join(command)}` did not start within {timeout:.0f} s:\n{tail}")
    return server


# --- the client ------------------------------------------------------------------------------


@dataclass
class Timing:
    """One streamed request: when it was sent, when each chunk came, when it
    ended, and its token counts from the final usage chunk."""

    sent: float
    chunks: list[float]
    ended: float
    prompt_tokens: int
    output_tokens: int


async def stream_openai(client, prompt: str, max_tokens: int) -> Timing:
    """One request through the official client (a pydantic model per chunk)."""
    sent = time.perf_counter()
    chunks, usage = [], None
    stream = await client.completions.create(model=SERVED_NAME, prompt=prompt,
                                             max_tokens=max_tokens, temperature=0, stream=True,
                                             stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices:  # one token each (its text may be empty: held back)
            chunks.append(time.perf_counter())
        usage = chunk.usage or usage
    if usage is None:
        raise RuntimeError("the stream ended without the usage chunk that "
                           "stream_options.include_usage asks for")
    return Timing(sent, chunks, time.perf_counter(), usage.prompt_tokens,
                  usage.completion_tokens)


async def stream_http(client, prompt: str, max_tokens: int) -> Timing:
    """One request over plain HTTP (the openai package's own HTTP library), each event's
    JSON parsed, as serving benchmarks' load generators do."""
    sent = time.perf_counter()
    chunks, usage = [], None
    body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                chunks.append(time.perf_counter())
            usage = chunk.get("usage") or usage
    if usage is None:
        raise RuntimeError("the stream ended without the usage chunk that "
                           "stream_options.include_usage asks for")
    return Timing(sent, chunks, time.perf_counter(), usage["prompt_tokens"],
                  usage["completion_tokens"])


def http_client(url: str, kind: str, concurrency: int, time_limit: float):
    """(the client, its request function, its close coroutine function) of ``kind``."""
    if kind == "openai":
        import openai

        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                                    timeout=time_limit)
        return client, stream_openai, client.close
    http = http_library()
    client = http.AsyncClient(base_url=url, timeout=time_limit,
                              limits=http.Limits(max_connections=concurrency))
    return client, stream_http, client.aclose


def http_library():
    """The HTTP library the installed openai is built on: httpx2 (openai 3), else httpx."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


async def run_load(url: str, prompts: list[str], concurrency: int, max_tokens: int,
                   time_limit: float, kind: str) -> tuple[list[Timing], int]:
    """Stream every prompt, at most ``concurrency`` at once; none is sent after
    ``time_limit`` seconds and any still running then is cancelled. (timings of the
    completed requests, how many were not completed)."""
    client, stream_one, close = http_client(url, kind, concurrency, time_limit)
    gate = asyncio.Semaphore(concurrency)
    deadline = time.perf_counter() + time_limit

    async def bounded(prompt: str):
        async with gate:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            try:
                return await asyncio.wait_for(stream_one(client, prompt, max_tokens), remaining)
            except asyncio.TimeoutError:
                return None

    results = await asyncio.gather(*(bounded(p) for p in prompts))
    await close()
    done = [r for r in results if r is not None]
    return done, len(results) - len(done)


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        value = values[0] if values else float("nan")
        return {"p50": value, "p90": value, "p99": value}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def summarize(timings: list[Timing], not_completed: int, client_cpu_s: float) -> dict:
    first_sent = min(t.sent for t in timings)
    last_end = max(t.ended for t in timings)
    output = sum(t.output_tokens for t in timings)
    with_text = [t for t in timings if t.chunks]
    ttft = [t.chunks[0] - t.sent for t in with_text]
    itl = [b - a for t in with_text for a, b in zip(t.chunks, t.chunks[1:])]
    tpot = [(t.chunks[-1] - t.chunks[0]) / (t.output_tokens - 1) for t in with_text
            if t.output_tokens > 1]
    return {"requests": len(timings), "not_completed": not_completed,
            "prompt_tokens": sum(t.prompt_tokens for t in timings), "output_tokens": output,
            "seconds": last_end - first_sent, "output_tok_s": output / (last_end - first_sent),
            "ttft_s": percentiles(ttft), "itl_s": percentiles(itl), "tpot_s": percentiles(tpot),
            "client_cpu_s": client_cpu_s}


def client_worker(url: str, prompts: list, concurrency: int, max_tokens: int,
                  time_limit: float, start_at: float, kind: str
                  ) -> tuple[list[Timing], int, float]:
    """One client process's share of the load, begun at ``start_at`` (time.time()) so that
    all clients start together: (timings, not completed, CPU seconds spent)."""
    import openai  # noqa: F401  (imported before the start, not inside the timed part)

    http_library()

    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    timings, missed = asyncio.run(run_load(url, prompts, concurrency, max_tokens,
                                           time_limit, kind))
    return timings, missed, time.process_time() - cpu


def run_clients(url: str, prompts: list, concurrency: int, max_tokens: int,
                time_limit: float, clients: int, kind: str = "http"
                ) -> tuple[list[Timing], int, float]:
    """The load from ``clients`` processes, each with its share of the prompts and of the
    concurrency (one Python process parsing every stream's chunks becomes the bottleneck
    of a fast server, as it would for a real deployment's many clients)."""
    clients = max(1, min(clients, concurrency))
    if clients == 1:
        return client_worker(url, prompts, concurrency, max_tokens, time_limit, 0.0, kind)
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    start_at = time.time() + 5.0  # room for the processes to start and import
    with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(client_worker, url, prompts[i::clients], shares[i],
                               max_tokens, time_limit, start_at, kind)
                   for i in range(clients)]
        results = [future.result() for future in futures]
    return ([t for timings, _, _ in results for t in timings],
            sum(missed for _, missed, _ in results), sum(cpu for _, _, cpu in results))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(server_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the server's process (HTTP, streams, text) and of its children
    (the engine's process, which runs the steps, and multiprocessing's resource tracker)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return cpu_seconds(server_pid), sum(cpu_seconds(int(pid)) for pid in children)


def measure_server(args, model: str, prompts: list[str], warmup: list[str],
                   concurrency: int) -> dict:
    server = start_server(model, engine_flags(args, concurrency), args.start_timeout)
    try:
        # the load's own pattern (clients arriving out of step), so that the shapes of
        # its mixed prefill steps are compiled before the timed run, as LLM.generate's are
        run_clients(server.url, warmup, concurrency, min(16, args.max_tokens),
                    args.time_limit, args.clients, args.client)
        rounds = []
        for _ in range(args.rounds):
            before = process_cpu(server.process.pid)
            timings, missed, cpu = run_clients(server.url, prompts, concurrency,
                                               args.max_tokens, args.time_limit, args.clients,
                                               args.client)
            after = process_cpu(server.process.pid)
            result = summarize(timings, missed, cpu)
            result["server_process_cpu_s"] = after[0] - before[0]
            result["engine_process_cpu_s"] = after[1] - before[1]
            rounds.append(result)
        result = median_round(rounds)
    finally:
        status = server.stop()
    if status != 0:
        print(f"warning: the server exited with status {status}", file=sys.stderr)
    return result


def median_round(rounds: list[dict]) -> dict:
    """The round of median throughput (the lower middle one of an even count), with every
    round's throughput beside it: one round of a closed-loop load varies by a tenth and
    more, mostly in how each wave of requests meets the engine."""
    ranked = sorted(rounds, key=lambda r: r["output_tok_s"])
    return {**ranked[(len(ranked) - 1) // 2],
            "rounds_tok_s": [r["output_tok_s"] for r in rounds]}


# --- offline LLM.generate, in its own process ------------------------------------------------


def engine_flags(args, concurrency: int) -> list[str]:
    flags = ["--max-num-seqs", str(concurrency), "--dtype", args.dtype, "--seed", "0"]
    if args.platform:
        flags += ["--platform", args.platform]
    if args.max_model_len:
        flags += ["--max-model-len", str(args.max_model_len)]
    return flags


def engine_prompts(prompts: list) -> list:
    """Text prompts as they are; token-id prompts as LLM.generate takes them."""
    return [{"prompt_token_ids": p} if isinstance(p, list) else p for p in prompts]


def offline_worker(args) -> None:
    """Runs in a fresh process: warm up, then time LLM.generate over the prompts, --rounds
    times."""
    from baseboard import LLM, SamplingParams

    spec = json.loads(Path(args.offline_worker).read_text())
    llm = LLM(spec["model"], dtype=args.dtype, platform=args.platform,
              max_num_seqs=spec["concurrency"], max_model_len=args.max_model_len, seed=0)
    llm.generate(engine_prompts(spec["warmup"]), SamplingParams(temperature=0,
                                                max_tokens=min(16, args.max_tokens)))
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        outputs = llm.generate(engine_prompts(spec["prompts"]), params)
        seconds = time.perf_counter() - start
        output = sum(len(o.outputs[0].token_ids) for o in outputs)
        rounds.append({"requests": len(outputs), "seconds": seconds, "output_tokens": output,
                       "prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs),
                       "output_tok_s": output / seconds})
    Path(args.offline_worker).write_text(json.dumps(median_round(rounds)))


def measure_offline(args, model: str, prompts: list[str], warmup: list[str],
                    concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / "offline.json"
        spec.write_text(json.dumps({"model": model, "concurrency": concurrency,
                                    "prompts": prompts, "warmup": warmup}))
        command = [sys.executable, __file__, "--offline-worker", str(spec), "--dtype",
                   args.dtype, "--max-tokens", str(args.max_tokens),
                   "--rounds", str(args.rounds)]
        if args.platform:
            command += ["--platform", args.platform]
        if args.max_model_len:
            command += ["--max-model-len", str(args.max_model_len)]
        subprocess.run(command, cwd=REPO, check=True,
                       timeout=args.time_limit + args.start_timeout)
        return json.loads(spec.read_text())


# --- the run ---------------------------------------------------------------------------------


def milliseconds(stats: dict[str, float]) -> str:
    return "/".join(f"{stats[p] * 1e3:.0f}" for p in ("p50", "p90", "p99"))


def print_table(rows: list[dict]) -> None:
    header = ["concurrency", "requests", "server tok/s", "offline tok/s", "ratio",
              "TTFT ms p50/p90/p99", "ITL ms p50/p90/p99", "TPOT ms p50/p90/p99",
              "client CPU s", "server / engine process CPU s"]
    lines = [header]
    for row in rows:
        s, o = row["server"], row["offline"]
        lines.append([str(row["concurrency"]), f"{s['requests']}+{s['not_completed']} missed",
                      f"{s['output_tok_s']:.1f}", f"{o['output_tok_s']:.1f}",
                      f"{s['output_tok_s'] / o['output_tok_s']:.2f}", milliseconds(s["ttft_s"]),
                      milliseconds(s["itl_s"]), milliseconds(s["tpot_s"]),
                      f"{s['client_cpu_s']:.1f}",
                      f"{s['server_process_cpu_s']:.2f} / {s['engine_process_cpu_s']:.2f}"])
    for line in lines:
        print("| " + " | ".join(line) + " |")
        if line is header:
            print("|" + " --- |" * len(header))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="what `baseboard serve` loads (default: the embedded smollm2)")
    parser.add_argument("--shape", help="random weights of this shape instead of --model "
                                        "(qwen2.5-0.5b, llama3-8b, tiny)")
    parser.add_argument("--concurrency", default="8,32",
                        type=lambda text: [int(c) for c in text.split(",") if c])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=64,
                        help="prompt tokens with --shape; words of text otherwise")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--platform")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--threads", type=int,
                        help="torch threads of both engines (BASEBOARD_NUM_THREADS; default: "
                             "the engine's, every core)")
    parser.add_argument("--time-limit", type=float, default=600,
                        help="seconds each side's measured run may take")
    parser.add_argument("--start-timeout", type=float, default=600,
                        help="seconds a server may take to load and listen")
    parser.add_argument("--clients", type=int,
                        default=max(1, min(8, (os.cpu_count() or 2) // 4)),
                        help="client processes sharing the load (default: a quarter of the "
                             "CPUs, at most 8)")
    parser.add_argument("--client", choices=("http", "openai"), default="http",
                        help="how the load is sent: plain HTTP with each event's JSON "
                             "parsed (default), or the official openai client, whose "
                             "per-chunk models cost the load processes several times more "
                             "CPU")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed loads on the same server, and timed LLM.generate calls "
                             "in the same process; the median of each is reported")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny shape in float32: a few requests at concurrency 2, 4")
    parser.add_argument("--offline-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline_worker:
        return offline_worker(args)
    if args.threads:  # read by the server and the offline worker, both started from here
        os.environ["BASEBOARD_NUM_THREADS"] = str(args.threads)
    if args.smoke:
        args.shape, args.dtype, args.concurrency = "tiny", "float32", [2, 4]
        args.requests, args.prompt_len, args.max_tokens, args.rounds = 8, 16, 8, 2

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.shape:
            from e2e_gpu_workers import SHAPES

            model = str(Path(scratch) / args.shape)
            build_random_checkpoint(args.shape, Path(model))
            vocab = SHAPES[args.shape]["vocab_size"]
            prompts = id_prompts(args.requests, args.prompt_len, vocab, seed=0)
            warmup = id_prompts(4 * max(args.concurrency), args.prompt_len, vocab, seed=1)
        else:
            prompts = text_prompts(args.requests, args.prompt_len, "Request")
            warmup = text_prompts(4 * max(args.concurrency), args.prompt_len, "Warm-up")
        rows = []
        for concurrency in args.concurrency:
            server = measure_server(args, model, prompts, warmup[:4 * concurrency],
                                    concurrency)
            offline = measure_offline(args, model, prompts, warmup[:4 * concurrency],
                                      concurrency)
            rows.append({"concurrency": concurrency, "server": server, "offline": offline})
            print(f"concurrency {concurrency}: server {server['output_tok_s']:.1f} tok/s, "
                  f"offline {offline['output_tok_s']:.1f} tok/s", file=sys.stderr)

    print_table(rows)
    if args.json:
        record = {"date": datetime.date.today().isoformat(), "commit": commit(),
                  "machine": cpu_name(), "cpus": os.cpu_count(),
                  "load_average": {"before": load_before, "after": os.getloadavg()},
                  "model": args.shape or args.model,
                  "dtype": args.dtype, "threads": args.threads, "requests": args.requests,
                  "prompt_len": args.prompt_len, "max_tokens": args.max_tokens,
                  "clients": args.clients, "client": args.client, "rounds": args.rounds,
                  "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

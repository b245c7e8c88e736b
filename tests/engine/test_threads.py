"""One LLM used from several threads gives each caller what a serial call gives."""

import threading

from baseboard import LLM, SamplingParams

PROMPTS = ["The quick brown fox", "Paris is the capital", "Paged attention stores",
           "Continuous batching mixes"]


def test_four_threads_get_the_serial_results(tiny_llama):
    llm = LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=8, seed=0)
    params = [SamplingParams(temperature=0, max_tokens=12),
              SamplingParams(temperature=0.9, seed=11, max_tokens=12),
              SamplingParams(temperature=0, max_tokens=7, stop=["the"]),
              SamplingParams(temperature=0.7, top_k=5, seed=3, max_tokens=12)]
    serial = [llm.generate(p, q)[0].outputs[0] for p, q in zip(PROMPTS, params)]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(PROMPTS))

    def call(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):  # several rounds, so calls overlap in every phase
                out = llm.generate(PROMPTS[i], params[i])[0].outputs[0]
                assert (out.text, out.token_ids) == (serial[i].text, serial[i].token_ids)
            results[i] = out
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == list(range(len(PROMPTS)))
    assert llm.engine.is_idle()


def test_a_stream_and_a_generate_from_two_threads(tiny_llama):
    llm = LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=4)
    greedy = SamplingParams(temperature=0, max_tokens=16)
    expected = [llm.generate(p, greedy)[0].outputs[0].text for p in PROMPTS[:2]]
    streamed: list[str] = []
    worker = threading.Thread(target=lambda: streamed.append(
        "".join(llm.stream(PROMPTS[0], greedy))))
    worker.start()
    generated = llm.generate(PROMPTS[1], greedy)[0].outputs[0].text
    worker.join(timeout=60)
    assert [streamed[0], generated] == expected

"""Forward passes in worker processes: the same answers as in process, concurrent calls, errors
passed back, and a killed worker replaced while the others keep answering."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from linkner.model.predictor import SpanPredictor
from linkner.model.processes import PredictorProcesses, PredictorSpec, WorkerLost


@pytest.fixture(scope="module")
def processes(tiny_checkpoint):
    pool = PredictorProcesses(PredictorSpec(str(tiny_checkpoint), "cpu", 1, {"mc_samples": 2}), count=2)
    yield pool
    pool.close()


def test_worker_processes_answer_as_the_predictor_in_this_process(processes, tiny_checkpoint, toy_dev):
    local = SpanPredictor.from_checkpoint(tiny_checkpoint, "cpu", mc_samples=2)
    sentences = [list(s.tokens) for s in toy_dev]
    chunks = [sentences[i : i + 10] for i in range(0, len(sentences), 10)]

    async def all_at_once():
        return await asyncio.gather(*[processes.predict(chunk, ["confidence", "entropy"]) for chunk in chunks])

    answers = asyncio.run(all_at_once())  # 6 calls on 2 workers: the rest wait for an idle one
    assert [entity for chunk in answers for entity in chunk] == local.predict(sentences, ["confidence", "entropy"])
    assert any(entities for entities in local.predict(sentences))  # the tiny model does find entities


def test_workers_describe_their_model_and_answer_span_embeddings_so_the_owner_needs_no_copy(processes,
                                                                                             tiny_checkpoint, toy_dev):
    import torch

    local = SpanPredictor.from_checkpoint(tiny_checkpoint, "cpu", mc_samples=2)
    assert processes.description == local.describe()
    assert processes.description["labels"] and processes.description["device"] == "cpu"
    items = [(list(s.tokens), 0, 1) for s in toy_dev[:6]]
    embeddings = asyncio.run(processes.span_embeddings(items))
    assert torch.allclose(embeddings, local.span_embeddings(items), atol=1e-5)


def test_a_worker_answers_only_the_predictor_methods_it_names(processes):
    with pytest.raises(ValueError, match="not 'train'"):
        asyncio.run(processes._call("train", []))
    assert all(worker.process.is_alive() for worker in processes._workers)


def test_an_error_in_a_worker_reaches_the_caller_and_the_worker_goes_on(processes, toy_dev):
    async def calls():
        with pytest.raises(ValueError, match="no-such-estimator"):
            await processes.predict([list(toy_dev[0].tokens)], ["no-such-estimator"])
        return await asyncio.gather(*[processes.predict([list(toy_dev[0].tokens)], ["confidence"]) for _ in range(4)])

    assert len(asyncio.run(calls())) == 4
    assert all(worker.process.is_alive() for worker in processes._workers)


def test_a_killed_worker_fails_its_call_and_is_replaced(processes, toy_dev):
    sentences = [list(s.tokens) for s in toy_dev] * 20  # long enough to be killed while it runs

    async def scenario():
        call = asyncio.ensure_future(processes.predict(sentences, ["confidence"]))
        await asyncio.sleep(0.05)  # sent, being predicted
        [busy] = [worker for worker in processes._workers if worker.pending is not None]
        os.kill(busy.process.pid, signal.SIGKILL)
        with pytest.raises(WorkerLost, match="exit code -9"):
            await call
        meanwhile = await processes.predict(sentences[:5], ["confidence"])  # the other worker answers
        for _ in range(600):  # the replacement loads the model
            if len(processes._workers) == 2:
                break
            await asyncio.sleep(0.1)
        both = await asyncio.gather(*[processes.predict(sentences[:5], ["confidence"]) for _ in range(2)])
        return busy, meanwhile, both

    killed, meanwhile, both = asyncio.run(scenario())
    assert len(meanwhile) == 5 and all(len(answer) == 5 for answer in both)
    assert killed not in processes._workers and len(processes._workers) == 2
    assert all(worker.process.is_alive() for worker in processes._workers)


def test_large_calls_under_uvloop_as_ray_serve_runs_them(processes, toy_dev):
    """Ray Serve's replicas run uvloop, whose readers make the pipe non-blocking: a call and an
    answer far larger than a pipe's buffer must still go through whole."""
    uvloop = pytest.importorskip("uvloop")
    sentences = [list(s.tokens) for s in toy_dev] * 60  # thousands of sentences: megabytes each way

    async def calls():
        return await asyncio.gather(processes.predict(sentences, ["confidence"]),
                                    processes.predict(sentences[:7], ["confidence"]))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        big, small = runner.run(calls())
    assert len(big) == len(sentences) and len(small) == 7
    assert big[:7] == small
    assert all(worker.process.is_alive() for worker in processes._workers)

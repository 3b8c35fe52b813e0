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
    # chunk by chunk: the same calls lay out the same packed rows, so the floats agree to the bit
    assert answers == [local.predict(chunk, ["confidence", "entropy"]) for chunk in chunks]
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


@pytest.mark.slow  # 25-90 s on 2 cores: not in the quick subset
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


def _threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.slow  # 25-90 s on 2 cores: not in the quick subset
def test_a_lone_call_runs_on_every_workers_cores_and_overlapping_calls_each_on_their_own(tiny_checkpoint, toy_dev):
    """Idle, a call borrows the other workers (their cores run its pass); once calls overlap, each
    worker runs a pass of its own again, and borrowing comes back when the load goes."""
    pool = PredictorProcesses(PredictorSpec(str(tiny_checkpoint), "cpu", 1, {"mc_samples": 2}), count=2)
    sentences = [list(s.tokens) for s in toy_dev] * 4

    async def held() -> list[int]:
        """Workers borrowed by each call in flight, once the call just made is sent."""
        await asyncio.sleep(0)
        return [len(worker.borrowed) for worker in pool._workers if worker.pending is not None]

    async def scenario():
        pool.borrow_idle = False  # the control: a pass on the worker's own thread
        await asyncio.gather(*[pool.predict(sentences, ["confidence"]) for _ in range(2)])
        threads_before = {worker.process.pid: _threads_of(worker.process.pid) for worker in pool._workers}
        assert [len(worker.borrowed) for worker in pool._workers] == [0, 0]
        await pool.predict(sentences, ["confidence"])
        threads_unborrowed = {pid: _threads_of(pid) for pid in threads_before}
        pool.borrow_idle = True
        lone = asyncio.ensure_future(pool.predict(sentences, ["confidence"]))
        lone_held = await held()
        assert pool._idle.empty()  # the other worker is lent to the lone call
        await lone
        threads_after = {pid: _threads_of(pid) for pid in threads_before}
        assert pool._idle.qsize() == 2
        # calls arriving together: the first may borrow, the ones that waited never do
        rounds = []
        for _ in range(6):
            calls = [asyncio.ensure_future(pool.predict(sentences, ["confidence"])) for _ in range(3)]
            await calls[0]
            rounds.append(await held())
            await asyncio.gather(*calls)
        call = asyncio.ensure_future(pool.predict(sentences, ["confidence"]))
        overlapped_lone = await held()
        await call
        for _ in range(12):  # quiet again: one call at a time
            await pool.predict(sentences[:2], ["confidence"])
        call = asyncio.ensure_future(pool.predict(sentences, ["confidence"]))
        quiet_lone = await held()
        await call
        return lone_held, (threads_before, threads_unborrowed, threads_after), rounds, overlapped_lone, quiet_lone

    try:
        lone_held, (before, unborrowed, after), rounds, overlapped_lone, quiet_lone = asyncio.run(scenario())
    finally:
        pool.close()
    assert lone_held == [1]
    # the lone call's worker ran its pass on 2 torch threads: its thread pools grew (a pass on one did not)
    assert unborrowed == before
    grown = sorted(after[pid] - before[pid] for pid in before)
    assert grown[0] == 0 and grown[1] >= 1, grown
    assert rounds[0] == [0, 0], rounds  # the two calls that waited for the lone one run side by side
    assert not any(any(held) for held in rounds), rounds  # and no call that waited ever borrows
    assert overlapped_lone == [0]  # calls have been overlapping: no borrowing
    assert quiet_lone == [1]

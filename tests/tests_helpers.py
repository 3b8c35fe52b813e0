"""Small helpers shared by tests."""

import time
from pathlib import Path
from typing import Any

from linkner.data.spans import Sentence


def entity_texts(sentence: Sentence) -> list[str]:
    return [sentence.span_text(span) for span in sentence.entities]


def train_tiny_span_model(encoder: Path, train: list[Sentence], dev: list[Sentence], output: Path) -> Path:
    """A tiny span model on ``encoder`` trained on the toy corpus (a few seconds on 2 cores)."""
    from linkner.model.training import TrainConfig, Trainer

    config = TrainConfig(encoder=str(encoder), epochs=6, batch_size=16, lr_encoder=1e-3, lr_head=3e-3, hidden_dim=64,
                         width_dim=8, casing_dim=8, patience=6, progress=False, threads=1, max_span_len=4,
                         mention_replacement=0.0, typo_rate=0.0)  # augmentation: test_augment.py
    Trainer(config, train, dev, output).fit()
    return output


def assert_lone_surrogate_refused(target: str) -> None:
    """A string field holding a lone UTF-16 surrogate (as some clients encode it) is refused with
    INVALID_ARGUMENT naming the problem, not answered UNKNOWN."""
    import grpc
    import pytest

    from protos.linkner.v1 import linkner_pb2 as pb

    text = "Paris \ud800 ok".encode("utf-8", "surrogatepass")
    raw = b"\x0a" + bytes([len(text)]) + text  # field 1 (text), as such a client sends it
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/linkner.v1.LinkNER/Recognize", request_serializer=None,
                                   response_deserializer=pb.RecognizeResponse.FromString)
        with pytest.raises(grpc.RpcError) as error:
            call(raw, timeout=20)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert "valid UTF-8" in error.value.details()


class Callers:
    """``count`` threads calling Recognize through our Python client (its own channel each, retrying
    what did not run within the call's deadline) until stopped; every answer's model and every
    failure, with wall-clock start and end times."""

    def __init__(self, count: int, target: str, text: str = "John Smith visited Paris yesterday .",
                 timeout_s: float = 30.0, pause_s: float = 0.0) -> None:
        import threading

        self.count, self.target, self.text, self.timeout_s, self.pause_s = count, target, text, timeout_s, pause_s
        self.answers: list[tuple[float, float, str, int]] = []  # (start, end, model, entities)
        self.failures: list[tuple[float, float, str, str]] = []  # (start, end, status code, details)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(count)]

    def _call(self) -> None:
        from clients.client import LinkNERClient, LinkNERError

        with LinkNERClient(self.target, timeout_s=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.time()
                try:
                    result = client.recognize(self.text, policy="none")
                    self.answers.append((started, time.time(), result.model, len(result.entities)))
                except LinkNERError as error:
                    self.failures.append((started, time.time(), error.code.name, error.details))
                if self.pause_s:
                    time.sleep(self.pause_s)

    def __enter__(self) -> "Callers":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def report(self) -> str:
        """The failures (at most 10) with their wall-clock times, for an assertion message."""
        lines = [f"{clock(start)} +{end - start:.2f}s {code}: {details}"
                 for start, end, code, details in self.failures[:10]]
        return f"{len(self.failures)} failed calls of {len(self.failures) + len(self.answers)}:\n" + "\n".join(lines)


def clock(wall: float) -> str:
    """``HH:MM:SS.mmm`` of a wall-clock time (local), as Ray's logs print it."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f"{wall % 1:.3f}"[1:]

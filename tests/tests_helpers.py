"""Small helpers shared by tests."""

from pathlib import Path

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

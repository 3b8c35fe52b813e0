"""The service logic in-process: validation, text splitting, offsets, options."""

import asyncio
import re

import pytest

from linkner.routing.linker import RDCLinker
from linkner.routing.policy import DetectionPolicy
from linkner.llm.oracle import OracleBackend
from linkner.model.predictor import SpanPredictor
from linkner.service.limits import ServiceLimits
from linkner.service.service import LinkNERService
from protos.protocol import InvalidRequest, RecognizeOptions, RecognizeRequest


@pytest.fixture()
def service(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    linker = RDCLinker(predictor, OracleBackend(toy_dev), DetectionPolicy(kind="threshold", threshold=0.5))
    return LinkNERService(linker, ["confidence", "entropy", "mc_dropout"], "tiny", ServiceLimits(max_chars=500))


def recognize(service, **fields):
    result, _ = asyncio.run(service.answer(service.prepare(RecognizeRequest(**fields))))  # as the ingress does
    return result


def test_text_gets_entities_with_character_offsets(service):
    text = "John Smith visited Paris yesterday .  Google said Mary Jones will move to Tokyo ."
    output = recognize(service, text=text, request_id="r1")
    assert output.request_id == "r1" and output.model == "tiny"
    assert {(e.text, e.label) for e in output.entities} >= {("John Smith", "PER"), ("Paris", "LOC")}
    for entity in output.entities:
        assert text[entity.char_start : entity.char_end] == entity.text
    assert max(e.sentence for e in output.entities) == 1
    assert set(output.timings_ms) >= {"recognize", "detect", "classify", "merge", "total"}


def test_words_input_and_candidates(service):
    output = recognize(service, words=["Anna", "Berg", "left", "Acme", "Corp", "."],
                       options=RecognizeOptions(return_candidates=True, policy="none"))
    assert all(e.char_start == -1 and e.source == "local" for e in output.entities)
    assert output.entities and all(len(e.candidates) == 3 for e in output.entities)  # the top 3, "O" included
    assert output.llm_spans == 0


def test_text_without_entities(service):
    output = recognize(service, text="nothing happened today .")
    assert output.entities == [] and not output.degraded


@pytest.mark.parametrize("fields, message", [
    ({"text": ""}, "empty request"),
    ({"text": "   \n "}, "empty request"),
    ({"text": "x" * 501}, "text too long: 501 characters"),
    ({"text": "a", "words": ["a"]}, "either text or words"),
    ({"words": ["ok", ""]}, "words[1] is empty"),
    ({"words": ["ok", "a b"]}, "words[1] contains whitespace"),
    ({"words": ["bad\udcff"]}, "not valid UTF-8"),
    ({"words": ["a\x00"]}, "control characters"),
    ({"text": "Paris", "options": {"estimator": "vibes"}}, "unknown estimator 'vibes'"),
    ({"text": "Paris", "options": {"policy": "sometimes"}}, "unknown policy 'sometimes'"),
    ({"text": "Paris", "options": {"policy": "calibrated"}}, "no calibration"),
    ({"text": "Paris", "options": {"threshold": 1.5}}, "threshold 1.5 is out of range"),
    ({"text": "Paris", "options": {"budget": -0.1}}, "budget -0.1 is out of range"),
    ({"text": "Paris", "options": {"max_llm_spans": -1}}, "must not be negative"),
    ({"text": "Paris", "options": {"threshold": 0.9, "policy": "budget"}},
     "threshold belongs to policy 'threshold', but this request asks policy 'budget'"),
    ({"text": "Paris", "options": {"estimator": "entropy"}},
     "the server's threshold 0.5 was made for 'confidence'; pass a threshold or budget with estimator 'entropy'"),
])
def test_bad_requests_say_what_is_wrong(service, fields, message):
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        recognize(service, **fields)


def test_batch_size_checks():
    from linkner.service.documents import check_batch

    check_batch(3, ServiceLimits(max_batch_items=3))
    with pytest.raises(InvalidRequest, match="empty batch"):
        check_batch(0, ServiceLimits())
    with pytest.raises(InvalidRequest, match=re.escape("batch too large: 4 items, the limit is 3")):
        check_batch(4, ServiceLimits(max_batch_items=3))


def test_no_request_routes_more_than_the_server_cap(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    linker = RDCLinker(predictor, OracleBackend(toy_dev), DetectionPolicy(kind="none"))
    service = LinkNERService(linker, ["confidence"], "tiny", ServiceLimits(max_llm_spans_per_request=2))
    text = " ".join(" ".join(s.tokens) for s in toy_dev[:20])
    everything = recognize(service, text=text, options=RecognizeOptions(budget=1.0, max_llm_spans=1000))
    assert len(everything.entities) > 2 and everything.llm_spans == 2
    one = recognize(service, text=text, options=RecognizeOptions(budget=1.0, max_llm_spans=1))
    assert one.llm_spans == 1
    threshold = recognize(service, text=text, options=RecognizeOptions(threshold=0.0, estimator="confidence"))
    assert threshold.llm_spans == 2

"""benchmarks.latency_breakdown cuts one request's spans into stages that add up to what the
caller measured."""

from benchmarks import latency_breakdown


def span(name, start_ms, end_ms):
    return {"name": name, "start_ns": int(start_ms * 1e6), "end_ns": int(end_ms * 1e6)}


def test_stages_add_up_to_the_callers_latency():
    spans = [span("linkner.v1.LinkNER/Recognize", 1.0, 19.0), span("linkner.recognize", 2.0, 18.0),
             span("linkner.ner.request", 4.0, 17.0), span("linkner.ner.batch", 5.0, 16.0)]
    stages = latency_breakdown.stages_of(spans, client_ms=21.0)
    assert stages == {"model": 11.0, "NER: waiting for its turn": 2.0, "Ray call ingress <-> NER": 3.0,
                      "ingress: our code": 2.0, "gRPC transport and server framework": 3.0, "total": 21.0}
    assert sum(stages[name] for name in latency_breakdown.STAGES) == stages["total"]
    assert latency_breakdown.stages_of(spans[:3], client_ms=21.0) is None  # a span missing: not counted


def test_unknown_configurations_are_refused():
    import pytest

    with pytest.raises(SystemExit):
        latency_breakdown.parse_args(["--configs", "pool,turbo"])
    assert latency_breakdown.parse_args(["--configs", "pool,embedded"]).configs == "pool,embedded"

"""LinkNER's benchmarks, run as modules from the project root (``python -m benchmarks.NAME --help``);
each writes ``benchmarks/results/NAME.json`` and, beside it, the markdown table it prints.

Serving and speed (docs/performance.md):

- ``serving``: the served path over gRPC at each concurrency against the in-process ceiling
- ``inprocess``: the NER path in process (encoder, predictor one at a time and batched, HF pipeline)
- ``latency_breakdown``: where a single caller's latency goes, from traced requests
- ``pass_sizes``: sentences a forward pass carries under load, and the model's cost at that size
- ``grpc_floor``: a bare ``grpc.aio`` server of the same contract, the floor of a Python gRPC service
- ``tracing``: served throughput with tracing on against off, and one request's waterfall
- ``reliability``: load held, faults survived and hostile input on a multi-node Ray cluster
- ``reliability_vllm``: the LLM replica killed with the real vLLM engine
- ``llm_speed``: the embedded LLM (vLLM on CPU): engine start, a span one at a time and 8 at once,
  a calibration pass, and whether the letters match the previous configuration

Quality (docs/quality.md):

- ``quality``: F1, uncertainty AUROC / ECE, training time and speed of local span models
- ``error_detector``: the learned error detector against every estimator
- ``robust_training``: a baseline and a robust (augmented) model on clean and perturbed test sets
- ``linking``: oracle- and LLM-linked F1 against the share of spans sent to the LLM
- ``candidates``: every label or only the local model's candidates offered to the LLM
- ``llm_modes``: the embedded LLM's accuracy by answer mode and demonstrations
- ``raw_text``: raw text through the service's own path against pre-tokenized sentences
- ``segmenters``: sentence and word segmenters compared

Shared, not run: ``common`` (paths, options, the markdown table, the result writer), ``load`` (the
closed-loop gRPC load), ``cluster_harness`` (a multi-node Ray cluster on one machine and its
faults), ``hostile_input`` (hypothesis strategies of hostile requests) and ``ingress_without_ray``
(the ingress in a plain process, started by ``serving`` and ``pass_sizes``).
"""

"""The span-based local NER model (SpanNER): features, batching, network, checkpoints."""

"""LLM backends behind one protocol, prompts and demonstrations (heavy engines import lazily)."""

from linkner.llm.protocol import NON_ENTITY, Demonstration, LLMBackend, SpanAnswer, SpanQuery

__all__ = ["NON_ENTITY", "Demonstration", "LLMBackend", "SpanAnswer", "SpanQuery"]

"""LinkNER core: span NER with uncertainty, LLM linking (RDC) and evaluation. No Ray in here."""

__version__ = "0.1.0"

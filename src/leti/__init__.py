"""leti: Learning from Textual Interactions for code language models."""

__version__ = "0.1.0"

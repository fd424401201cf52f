"""symtune: symbol tuning of language models and measurement of in-context learning."""

__version__ = "0.1.0"

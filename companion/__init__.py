"""companion: a self-hosted AI companion that runs a local LLM and remembers its users."""

__version__ = "0.1.0"

"""GGUF headers, metadata and chat templates."""

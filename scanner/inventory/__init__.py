"""ML-BOM inventory: what model files and folders record about themselves, read statically (issue 11)."""

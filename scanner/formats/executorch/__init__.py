"""ExecuTorch `.pte` programs."""

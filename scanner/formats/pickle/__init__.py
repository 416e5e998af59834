"""The pickle engine: tokenizer, symbolic machine, policy, nested payloads."""

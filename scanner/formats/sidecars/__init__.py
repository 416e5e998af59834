"""Files loaders act on by name (chat templates, shard indexes, YAML/Hydra configs, Core ML
manifests) and XML models."""

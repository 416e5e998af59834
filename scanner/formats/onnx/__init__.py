"""ONNX models: protobuf parsing, skeletons of large models, external data."""

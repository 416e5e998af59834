"""TensorFlow SavedModels, frozen graphs and TFLite flatbuffers, read without TensorFlow."""

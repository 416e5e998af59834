"""HDF5 (in a sandboxed child) and Keras configs."""

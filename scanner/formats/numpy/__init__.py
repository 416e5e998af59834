"""NumPy `.npy`/`.npz` headers and joblib's interleaved arrays."""

"""tar, gzip/bz2/xz/lzma/lz4/zlib streams and 7z: nested, bounded."""

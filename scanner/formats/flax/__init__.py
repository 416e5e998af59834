"""Flax msgpack checkpoints: a bounded msgpack walker and the checks of flax.serialization.msgpack_restore."""

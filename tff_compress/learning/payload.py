"""Bytes of what crosses the network, computed from the tensors themselves.

`tensor_bytes(structure)` is the int64 total of `size * itemsize` over every
tensor in `structure`, computed in TensorFlow from the actual values — exact
for float32 weights and for encoded payloads (packed codes, scalars, seeds).
"""

from tff_compress.encoders import chain as _chain

tensor_bytes = _chain.payload_bytes

"""The bytes a round's clients receive or send, summed at the server.

What crosses the network for one client is the tensors of its message
(`encoders.chain.payload_bytes`). When the message's type has fully
defined shapes -- the float32 model, a codec's fixed-size payload, a
weight -- that size is a property of the type: every client of the round
sends the same number of bytes, and the total is that number times the
number of clients. It is then computed without touching the messages:
a per-client ``federated_map`` over a model-sized value costs the TFF
runtime a copy of the value into TensorFlow per client, which for many
small clients was as much as their training (`benchmarks/profile_clients.py`).
A message with a dynamic shape is measured client by client.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib


def static_bytes(type_spec) -> Optional[int]:
  """Bytes of every value of `type_spec`, or None if they can differ.

  Args:
    type_spec: A TFF tensor or struct type (not federated).

  Returns:
    The sum over its tensors of elements × item size when every shape is
    fully defined and every dtype numeric or bool; None otherwise.
  """
  if isinstance(type_spec, tff.TensorType):
    shape, dtype = type_spec.shape, np.dtype(type_spec.dtype)
    if shape is None or any(d is None for d in shape):
      return None
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
      return None
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if isinstance(type_spec, tff.StructType):
    total = 0
    for _, member in tff.structure.iter_elements(type_spec):
      size = static_bytes(member)
      if size is None:
        return None
      total += size
    return total
  return None


def sum_at_clients(*values):
  """int64@SERVER: the bytes of the CLIENTS-placed `values`, all clients.

  Inside a federated computation. With static shapes: the size of one
  client's values (their types) times the number of clients; otherwise
  each client's `chain_lib.payload_bytes`, summed.

  Args:
    *values: CLIENTS-placed federated values one client sends or receives
      together (a message and its weight).
  """
  members = [v.type_signature.member for v in values]
  size = static_bytes(tff.StructType([(None, m) for m in members]))
  if size is not None:
    return tff.federated_sum(tff.federated_value(np.int64(size), tff.CLIENTS))

  message_type = members[0] if len(members) == 1 else (
      tff.StructWithPythonType(members, tuple))

  @tff.tensorflow.computation(message_type)
  def bytes_of(message):
    return chain_lib.payload_bytes(message)

  return tff.federated_sum(tff.federated_map(
      bytes_of, values[0] if len(values) == 1 else tff.federated_zip(
          tuple(values))))

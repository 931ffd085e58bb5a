"""A chain of codec stages, its payload accounting and its wire format.

`Chain.encode` flattens a float32 tensor, runs the stages in order and
returns an ordered dict of every tensor that crosses the network: the last
stage's 'values' plus each stage's side information (keyed
'<stage>/<key>'). `Chain.decode` undoes it. `payload_bytes` is computed from
those tensors. `to_bytes`/`from_bytes` give the exact on-the-wire blob (what a
phone sends) with a header and a CRC32 (format in `wire.py`, which needs no
TensorFlow), and reject any malformed blob with `PayloadError`.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_compress.encoders import prng
from tff_compress.encoders import stages as stages_lib
from tff_compress.encoders import wire

PayloadError = stages_lib.PayloadError


class Chain:
  """transform -> subsample -> quantize -> bitpack, each stage optional.

  Its properties follow from the stages' declared attributes
  (`stages.Stage`).
  """

  def __init__(self, stages: Sequence[stages_lib.Stage]):
    self.stages = list(stages)
    names = [s.name for s in self.stages]
    if len(set(names)) != len(names):
      raise stages_lib.CodecError(f'duplicate stages in chain: {names}')

  @property
  def commutes_with_sum(self) -> bool:
    return all(s.commutes_with_sum for s in self.stages)

  @property
  def homogeneous(self) -> bool:
    """decode is positively homogeneous of degree 1 in the float entries."""
    return all(s.homogeneous for s in self.stages)

  @property
  def unbiased(self) -> bool:
    """E_seed[decode(encode(x))] = x for every x.

    Every stage must be unbiased, except that a stage with
    `unbiased_if_rotated` (EDEN's unbiased scale) counts as unbiased after a
    `haar_like` stage with only unbiased stages in between (DRIVE's
    argument holds for any linear unbiased step between rotation and
    quantizer, e.g. subsampling).
    """
    rotated = False
    for s in self.stages:
      if s.unbiased:
        rotated = rotated or s.haar_like
      elif not (rotated and s.unbiased_if_rotated):
        return False
    return True

  def lengths(self, n: int) -> list[int]:
    """Input length of each stage, then the final 'values' length."""
    out = [n]
    for s in self.stages:
      out.append(s.output_length(out[-1]))
    return out

  def spec(self, n: int) -> 'collections.OrderedDict[str, tuple]':
    """{entry: (numpy dtype, num elements)} of an encoded length-n tensor."""
    lengths = self.lengths(n)
    spec = collections.OrderedDict()
    values_dtype = np.float32
    for s, length in zip(self.stages, lengths[:-1]):
      for key, (dtype, count) in s.side_spec(length).items():
        spec[f'{s.name}/{key}'] = (np.dtype(dtype.as_numpy_dtype), count)
      values_dtype = s.values_dtype().as_numpy_dtype
    spec['values'] = (np.dtype(values_dtype), lengths[-1])
    return spec

  def encode(self, x: tf.Tensor, seed: tf.Tensor) -> dict:
    """Encodes any-shape float32 `x`; `seed` is int64 [2]."""
    v = tf.reshape(tf.cast(x, tf.float32), [-1])
    out = collections.OrderedDict()
    for i, s in enumerate(self.stages):
      encoded = s.encode(v, prng.fold_in(seed, i))
      for key, t in encoded.items():
        if key != 'values':
          out[f'{s.name}/{key}'] = t
      v = encoded['values']
    out['values'] = v
    return out

  def decode(self, encoded: dict, shape: Sequence[int],
             seed: tf.Tensor) -> tf.Tensor:
    """Inverse of `encode` for a tensor of static `shape`."""
    n = int(np.prod(shape))
    lengths = self.lengths(n)
    v = encoded['values']
    for i in reversed(range(len(self.stages))):
      s = self.stages[i]
      part = {key.split('/', 1)[1]: t for key, t in encoded.items()
              if key.startswith(s.name + '/')}
      part['values'] = v
      v = s.decode(part, lengths[i], prng.fold_in(seed, i))
    return tf.reshape(tf.cast(v, tf.float32), shape)

  # ---- wire format (Python side: what a device sends as bytes) ----

  def to_bytes(self, encoded: dict, n: int) -> bytes:
    """Serializes an encoded dict (numpy or eager tensors) to one blob."""
    return wire.pack(self.spec(n), {k: np.asarray(v) for k, v in
                                    encoded.items()}, n)

  def from_bytes(self, blob: bytes, n: int) -> dict:
    """Parses and checks a blob; any defect raises PayloadError."""
    return wire.unpack(self.spec(n), blob, n)


validate_side_info = wire.validate_side_info


def payload_bytes(encoded: dict) -> tf.Tensor:
  """int64 bytes of every tensor in `encoded` (what crosses the network)."""
  total = tf.constant(0, tf.int64)
  for t in tf.nest.flatten(encoded):
    t = tf.convert_to_tensor(t)
    total += tf.size(t, out_type=tf.int64) * t.dtype.size
  return total

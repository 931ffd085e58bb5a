"""A chain of codec stages, its payload accounting and its wire format.

`Chain.encode` flattens a float32 tensor, runs the stages in order and
returns an ordered dict of every tensor that crosses the network: the last
stage's 'values' plus each stage's side information (keyed
'<stage>/<key>'). `Chain.decode` undoes it. `payload_bytes` is computed from
those tensors. `to_bytes`/`from_bytes` give the exact on-the-wire blob (what a
phone sends) with a header and a CRC32, and reject any malformed blob with
`PayloadError`.
"""

from __future__ import annotations

import collections
import struct
import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_compress.encoders import stages as stages_lib

PayloadError = stages_lib.PayloadError

_MAGIC = b'TFFC'
_VERSION = 1
_HEADER = struct.Struct('<4sBIH')  # magic, version, n, entries
_ENTRY = struct.Struct('<BBI')     # name length, dtype code, num elements
_DTYPES = {0: np.float32, 1: np.int32, 2: np.uint8, 3: np.int64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_ELEMENTS = 1 << 31


class Chain:
  """transform -> subsample -> quantize -> bitpack, each stage optional."""

  def __init__(self, stages: Sequence[stages_lib.Stage]):
    self.stages = list(stages)
    names = [s.name for s in self.stages]
    if len(set(names)) != len(names):
      raise stages_lib.CodecError(f'duplicate stages in chain: {names}')

  @property
  def commutes_with_sum(self) -> bool:
    return all(s.commutes_with_sum for s in self.stages)

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
      encoded = s.encode(v, tf.random.experimental.stateless_fold_in(seed, i))
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
      v = s.decode(part, lengths[i],
                   tf.random.experimental.stateless_fold_in(seed, i))
    return tf.reshape(tf.cast(v, tf.float32), shape)

  # ---- wire format (Python side: what a device sends as bytes) ----

  def to_bytes(self, encoded: dict, n: int) -> bytes:
    """Serializes an encoded dict (numpy or eager tensors) to one blob."""
    spec = self.spec(n)
    body = []
    header = [_HEADER.pack(_MAGIC, _VERSION, n, len(spec))]
    for key, (dtype, count) in spec.items():
      arr = np.ascontiguousarray(np.asarray(encoded[key], dtype=dtype))
      if arr.size != count:
        raise PayloadError(f'entry {key!r} has {arr.size} elements, '
                           f'expected {count}')
      name = key.encode()
      header.append(_ENTRY.pack(len(name), _CODES[np.dtype(dtype)], count))
      header.append(name)
      body.append(arr.tobytes())
    blob = b''.join(header + body)
    return blob + struct.pack('<I', zlib.crc32(blob))

  def from_bytes(self, blob: bytes, n: int) -> dict:
    """Parses and checks a blob; any defect raises PayloadError."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
      raise PayloadError(f'payload must be bytes, got {type(blob).__name__}')
    blob = bytes(blob)
    if len(blob) < _HEADER.size + 4:
      raise PayloadError(f'payload of {len(blob)} bytes is shorter than the '
                         f'{_HEADER.size + 4}-byte header and checksum')
    body, (crc,) = blob[:-4], struct.unpack('<I', blob[-4:])
    if zlib.crc32(body) != crc:
      raise PayloadError('payload checksum mismatch (corrupted or truncated)')
    magic, version, got_n, entries = _HEADER.unpack_from(body, 0)
    if magic != _MAGIC:
      raise PayloadError(f'bad magic {magic!r}, expected {_MAGIC!r}')
    if version != _VERSION:
      raise PayloadError(f'unsupported payload version {version}')
    if got_n != n:
      raise PayloadError(f'payload encodes {got_n} elements, expected {n}')
    spec = self.spec(n)
    if entries != len(spec):
      raise PayloadError(f'payload has {entries} entries, expected '
                         f'{len(spec)}')
    offset = _HEADER.size
    layout = []
    for _ in range(entries):
      if offset + _ENTRY.size > len(body):
        raise PayloadError('payload truncated inside the entry table')
      name_len, code, count = _ENTRY.unpack_from(body, offset)
      offset += _ENTRY.size
      name = body[offset:offset + name_len]
      offset += name_len
      if len(name) != name_len:
        raise PayloadError('payload truncated inside an entry name')
      layout.append((name.decode('utf-8', 'replace'), code, count))
    out = collections.OrderedDict()
    for (name, code, count), (key, (dtype, want)) in zip(layout,
                                                         spec.items()):
      if name != key or _DTYPES.get(code) is None or (
          np.dtype(_DTYPES[code]) != dtype) or count != want:
        raise PayloadError(
            f'payload entry {name!r} ({count} x code {code}) does not match '
            f'the expected {key!r} ({want} x {dtype})')
      size = count * dtype.itemsize
      if offset + size > len(body):
        raise PayloadError(f'payload truncated in entry {key!r}')
      out[key] = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
      offset += size
    if offset != len(body):
      raise PayloadError(f'payload has {len(body) - offset} unexpected '
                         'trailing bytes')
    validate_side_info(out)
    return out


def validate_side_info(encoded: dict) -> None:
  """Side scalars must be finite and min <= max."""
  for key, arr in encoded.items():
    if key != 'values' and np.asarray(arr).dtype.kind == 'f':
      if not np.all(np.isfinite(arr)):
        raise PayloadError(f'payload entry {key!r} is not finite')
  lo, hi = encoded.get('quantize/min'), encoded.get('quantize/max')
  if lo is not None and hi is not None and float(lo[0]) > float(hi[0]):
    raise PayloadError('payload quantize/min > quantize/max')


def payload_bytes(encoded: dict) -> tf.Tensor:
  """int64 bytes of every tensor in `encoded` (what crosses the network)."""
  total = tf.constant(0, tf.int64)
  for t in tf.nest.flatten(encoded):
    t = tf.convert_to_tensor(t)
    total += tf.size(t, out_type=tf.int64) * t.dtype.size
  return total

"""The payload wire format, in numpy only (no TensorFlow).

One encoded tensor crosses the network as one blob:

    header  '<4sBIH'  magic b'TFFC', version 1, n (elements of the tensor),
                      number of entries
    entries '<BBI' + name, per entry: name length, dtype code, element count
    data    every entry's array, little-endian, in table order
    crc32   '<I' over everything before it

`Chain.to_bytes`/`from_bytes` (the server) and the phone's reference client
(`mobile_export`, which runs without TensorFlow) both use these functions;
the expected layout (`spec`: entry -> (dtype, count)) comes from the codec
chain on the server and from the export manifest on a phone.
"""

from __future__ import annotations

import collections
import struct
import zlib
from typing import Mapping

import numpy as np


class PayloadError(ValueError):
  """A payload that cannot be decoded; the message names the failed check."""


MAGIC = b'TFFC'
VERSION = 1
_HEADER = struct.Struct('<4sBIH')  # magic, version, n, entries
_ENTRY = struct.Struct('<BBI')     # name length, dtype code, num elements
DTYPES = {0: np.float32, 1: np.int32, 2: np.uint8, 3: np.int64}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}

Spec = Mapping[str, tuple]  # entry name -> (numpy dtype, element count)


def pack(spec: Spec, encoded: Mapping[str, object], n: int) -> bytes:
  """Serializes `encoded` (arrays laid out as `spec`) to one blob."""
  body = []
  header = [_HEADER.pack(MAGIC, VERSION, n, len(spec))]
  for key, (dtype, count) in spec.items():
    dtype = np.dtype(dtype)
    arr = np.ascontiguousarray(np.asarray(encoded[key], dtype=dtype))
    if arr.size != count:
      raise PayloadError(f'entry {key!r} has {arr.size} elements, '
                         f'expected {count}')
    name = key.encode()
    header.append(_ENTRY.pack(len(name), _CODES[dtype], count))
    header.append(name)
    body.append(arr.astype(dtype.newbyteorder('<'), copy=False).tobytes())
  blob = b''.join(header + body)
  return blob + struct.pack('<I', zlib.crc32(blob))


def unpack(spec: Spec, blob: bytes, n: int) -> 'collections.OrderedDict':
  """Parses and checks a blob against `spec`; any defect raises PayloadError."""
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
  if magic != MAGIC:
    raise PayloadError(f'bad magic {magic!r}, expected {MAGIC!r}')
  if version != VERSION:
    raise PayloadError(f'unsupported payload version {version}')
  if got_n != n:
    raise PayloadError(f'payload encodes {got_n} elements, expected {n}')
  if entries != len(spec):
    raise PayloadError(f'payload has {entries} entries, expected {len(spec)}')
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
  for (name, code, count), (key, (dtype, want)) in zip(layout, spec.items()):
    dtype = np.dtype(dtype)
    if name != key or DTYPES.get(code) is None or (
        np.dtype(DTYPES[code]) != dtype) or count != want:
      raise PayloadError(
          f'payload entry {name!r} ({count} x code {code}) does not match '
          f'the expected {key!r} ({want} x {dtype})')
    size = count * dtype.itemsize
    if offset + size > len(body):
      raise PayloadError(f'payload truncated in entry {key!r}')
    out[key] = np.frombuffer(body, dtype=dtype.newbyteorder('<'), count=count,
                             offset=offset).astype(dtype)
    offset += size
  if offset != len(body):
    raise PayloadError(f'payload has {len(body) - offset} unexpected '
                       'trailing bytes')
  validate_side_info(out)
  return out


def validate_side_info(encoded: Mapping[str, np.ndarray]) -> None:
  """Side scalars must be finite, min <= max, and scales >= 0.

  A negative EDEN scale ('<stage>/scale') would decode to the negated
  vector; the encoder never sends one.
  """
  for key, arr in encoded.items():
    if key != 'values' and np.asarray(arr).dtype.kind == 'f':
      if not np.all(np.isfinite(arr)):
        raise PayloadError(f'payload entry {key!r} is not finite')
      if key.endswith('/scale') and np.any(np.asarray(arr) < 0):
        raise PayloadError(f'payload entry {key!r} is negative')
  lo, hi = encoded.get('quantize/min'), encoded.get('quantize/max')
  if lo is not None and hi is not None and float(lo[0]) > float(hi[0]):
    raise PayloadError('payload quantize/min > quantize/max')

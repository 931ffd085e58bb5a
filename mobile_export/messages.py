"""Whole-model messages between the server and a phone (numpy only).

A broadcast or an update is one blob:

    header  '<4sBHqqqf'  magic (b'TFFB' broadcast, b'TFFU' update),
                         version 1, number of tensors, round index, the two
                         int64 seed words, aggregation weight (float32:
                         examples trained, 0 for a broadcast or a discarded
                         non-finite update)
    tensors per tensor: '<I' length, then that tensor's blob in the codec
            wire format (`tff_compress.encoders.wire`; an uncompressed
            tensor is the single entry 'raw')
    crc32   '<I' over everything before it

Every tensor is checked against the layout the receiver expects (`specs`:
per tensor {entry: (dtype, count)} and its element count): from the
server's `StructureCodec.specs()`, or on a phone from manifest.json.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Mapping, Sequence

import numpy as np

from tff_compress.encoders import wire

PayloadError = wire.PayloadError

BROADCAST = b'TFFB'
UPDATE = b'TFFU'
VERSION = 1
_HEADER = struct.Struct('<4sBHqqqf')
_LENGTH = struct.Struct('<I')


@dataclasses.dataclass
class Message:
  """A decoded message: per tensor an ordered dict of entry arrays."""

  kind: bytes
  round: int
  seed: np.ndarray  # int64 [2]
  weight: float
  tensors: list


def pack(kind: bytes, round_index: int, seed, tensors: Sequence[Mapping],
         specs: Sequence[Mapping], sizes: Sequence[int],
         weight: float = 0.0) -> bytes:
  """Serializes per-tensor entry dicts laid out as `specs`."""
  if len(tensors) != len(specs) or len(specs) != len(sizes):
    raise PayloadError(f'{len(tensors)} tensors for {len(specs)} specs')
  seed = np.asarray(seed, np.int64).reshape([2])
  parts = [_HEADER.pack(kind, VERSION, len(tensors), int(round_index),
                        int(seed[0]), int(seed[1]), float(weight))]
  for entries, spec, n in zip(tensors, specs, sizes):
    blob = wire.pack(spec, entries, n)
    parts.append(_LENGTH.pack(len(blob)))
    parts.append(blob)
  body = b''.join(parts)
  return body + struct.pack('<I', zlib.crc32(body))


def unpack(kind: bytes, blob: bytes, specs: Sequence[Mapping],
           sizes: Sequence[int]) -> Message:
  """Parses and checks a message; any defect raises PayloadError."""
  if not isinstance(blob, (bytes, bytearray, memoryview)):
    raise PayloadError(f'message must be bytes, got {type(blob).__name__}')
  blob = bytes(blob)
  if len(blob) < _HEADER.size + 4:
    raise PayloadError(f'message of {len(blob)} bytes is shorter than its '
                       f'{_HEADER.size + 4}-byte header and checksum')
  body, (crc,) = blob[:-4], struct.unpack('<I', blob[-4:])
  if zlib.crc32(body) != crc:
    raise PayloadError('message checksum mismatch (corrupted or truncated)')
  magic, version, count, round_index, s0, s1, weight = _HEADER.unpack_from(
      body, 0)
  if magic != kind:
    raise PayloadError(f'message kind {magic!r}, expected {kind!r}')
  if version != VERSION:
    raise PayloadError(f'unsupported message version {version}')
  if count != len(specs):
    raise PayloadError(f'message has {count} tensors, expected '
                       f'{len(specs)}')
  if not np.isfinite(weight) or weight < 0:
    raise PayloadError(f'message weight {weight} is not a finite '
                       'non-negative number')
  offset = _HEADER.size
  tensors = []
  for i, (spec, n) in enumerate(zip(specs, sizes)):
    if offset + _LENGTH.size > len(body):
      raise PayloadError(f'message truncated before tensor {i}')
    (length,) = _LENGTH.unpack_from(body, offset)
    offset += _LENGTH.size
    if offset + length > len(body):
      raise PayloadError(f'message truncated inside tensor {i}')
    try:
      tensors.append(wire.unpack(spec, body[offset:offset + length], n))
    except PayloadError as e:
      raise PayloadError(f'tensor {i}: {e}') from e
    offset += length
  if offset != len(body):
    raise PayloadError(f'message has {len(body) - offset} unexpected '
                       'trailing bytes')
  return Message(kind=magic, round=round_index,
                 seed=np.array([s0, s1], np.int64), weight=float(weight),
                 tensors=tensors)

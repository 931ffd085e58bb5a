"""The program state of a run, saved after every round and recovered on start.

Checkpoints are `tff.program.FileProgramStateManager` versions (one per
round, the last `keep` kept) of the state *packed* into one flat array per
dtype: a state with thousands of small arrays (FedGKT keeps every client's
edge model and optimizer state) took ~45 s to save as a SavedModel with one
node per array, against ~2 s for a few large arrays of the same total size.

A checkpoint torn by SIGKILL mid-save does not load; recovery removes it and
falls back to the previous one.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
from typing import Any, Optional, TextIO

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

PREFIX = 'round_'


def pack_state(state) -> collections.OrderedDict:
  """The leaves of `state` concatenated into one flat array per dtype."""
  groups = collections.OrderedDict()
  for leaf in tf.nest.flatten(state):
    a = np.asarray(leaf)
    groups.setdefault(a.dtype.name, []).append(a.reshape(-1))
  return collections.OrderedDict(
      (name, np.concatenate(parts)) for name, parts in groups.items())


def unpack_state(packed, template):
  """Inverse of `pack_state` given a structure with the same leaf shapes.

  Raises:
    ValueError: `packed` holds more or fewer values of a dtype than
      `template` needs (a checkpoint of another model).
  """
  offsets = collections.defaultdict(int)
  leaves = []
  for leaf in tf.nest.flatten(template):
    a = np.asarray(leaf)
    start = offsets[a.dtype.name]
    offsets[a.dtype.name] = start + a.size
    leaves.append(np.asarray(packed[a.dtype.name][start:start + a.size],
                             a.dtype).reshape(a.shape))
  for name, used in offsets.items():
    if used != np.asarray(packed[name]).size:
      raise ValueError(f'checkpoint has {np.asarray(packed[name]).size} '
                       f'{name} values, the run needs {used}')
  return tf.nest.pack_sequence_as(template, leaves)


class Checkpoints:
  """Per-round checkpoints of one run directory's program state."""

  def __init__(self, directory: str, keep: int = 2):
    self._directory = directory
    self._manager = tff.program.FileProgramStateManager(
        directory, prefix=PREFIX, keep_total=keep)

  def save(self, state: Any, round_num: int) -> None:
    asyncio.run(self._manager.save(pack_state(state), round_num))

  def load_latest(self, template: Any, out: Optional[TextIO] = None
                  ) -> tuple[Optional[Any], int]:
    """(newest state that loads, its round), or (None, 0) if none does.

    A checkpoint that does not load (torn by SIGKILL mid-save, or of another
    shape) is reported to `out` and deleted.
    """
    packed_template = pack_state(template)
    versions = asyncio.run(self._manager.get_versions()) or []
    for version in sorted(versions, reverse=True):
      try:
        packed = asyncio.run(self._manager.load(version, packed_template))
        return unpack_state(packed, template), version
      except Exception:  # pylint: disable=broad-except
        pass
      try:  # written unpacked by an earlier version of this program
        return asyncio.run(self._manager.load(version, template)), version
      except Exception as e:  # pylint: disable=broad-except
        if out is not None:
          print(f'checkpoint of round {version} unreadable '
                f'({type(e).__name__}); using an older one', file=out,
                flush=True)
        shutil.rmtree(os.path.join(self._directory, f'{PREFIX}{version}'),
                      ignore_errors=True)
    return None, 0

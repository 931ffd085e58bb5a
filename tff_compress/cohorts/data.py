"""A cohort's data: its G clients' batches stacked step by step.

Simulated client g of a cohort sees exactly the batches it would see as a
TFF client of its own (`federated_data.make_client_dataset`: its rows in
the order of its shuffle seed, cut into batches of B, the last one short).
Step s of the cohort holds batch s of every client, padded to R <= B rows:

  x     float32 ``[G, R, ...]``  the rows (zeros where padded)
  y     int32   ``[G, R]``       the labels (0 where padded)
  mask  float32 ``[G, R]``       1 for a real row, 0 for padding
  slot  int32   ``[G]``          each client's slot among the round's K
                                 (its Federated Dropout mask key)

A cohort has ``S = max_g ceil(E·n_g / B)`` steps; a client with fewer
batches has all-zero masks in its last steps, and the cohort's training
leaves it untouched there (`cohorts/client_work.py`).
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_compress.data import federated_data


def element_spec(input_shape: Sequence[int],
                 size: int) -> collections.OrderedDict:
  """The `tf.TensorSpec`s of one cohort step (rows: at most B, see
  `stack_clients`)."""
  g = int(size)
  return collections.OrderedDict(
      x=tf.TensorSpec([g, None, *input_shape], tf.float32),
      y=tf.TensorSpec([g, None], tf.int32),
      mask=tf.TensorSpec([g, None], tf.float32),
      slot=tf.TensorSpec([g], tf.int32))


def stack_clients(clients: Sequence[tuple[np.ndarray, np.ndarray, int]], *,
                  batch_size: int, epochs: int,
                  slots: Optional[Sequence[int]] = None
                  ) -> collections.OrderedDict:
  """The stacked batches of clients ``(x, y, shuffle_seed)``, as arrays.

  `slots` are the clients' slots in the round (default 0..G-1).

  Returns:
    ``OrderedDict(x [S, G, R, ...], y [S, G, R], mask [S, G, R],
    slot [S, G])``, with
    ``R = min(B, max_g E·n_g)`` rows per step: when every client holds
    fewer than B examples, no batch can be full, and padding to B would
    only move zeros (5x the data for 4-example clients in batches of 20).

  Raises:
    federated_data.DataError: A client has no examples or wrong dtypes.
  """
  if not clients:
    raise federated_data.DataError('a cohort needs at least one client')
  b = int(batch_size)
  for x, y, _ in clients:
    if x.dtype != np.float32 or y.dtype != np.int32 or len(y) == 0:
      raise federated_data.DataError(
          f'client arrays must be non-empty float32/int32, got '
          f'{x.dtype}/{y.dtype} with {len(y)} examples')
  orders = federated_data.visiting_orders(
      [len(y) for _, y, _ in clients], epochs, [s for _, _, s in clients])
  steps = max(-(-len(o) // b) for o in orders)
  rows = min(b, max(len(o) for o in orders))
  g = len(clients)
  shape = clients[0][0].shape[1:]
  xs = np.zeros((steps, g, rows, *shape), np.float32)
  ys = np.zeros((steps, g, rows), np.int32)
  mask = np.zeros((steps, g, rows), np.float32)
  for j, ((x, y, _), order) in enumerate(zip(clients, orders)):
    full, rest = divmod(len(order), b)
    if full:  # whole batches: [full, B] rows at once
      head = order[:full * b]
      xs[:full, j] = x[head].reshape(full, b, *shape)
      ys[:full, j] = y[head].reshape(full, b)
      mask[:full, j] = 1.0
    if rest:
      tail = order[full * b:]
      xs[full, j, :rest] = x[tail]
      ys[full, j, :rest] = y[tail]
      mask[full, j, :rest] = 1.0
  slots = np.arange(g) if slots is None else np.asarray(slots)
  if slots.shape != (g,):
    raise federated_data.DataError(f'{len(slots)} slots for {g} clients')
  return collections.OrderedDict(
      x=xs, y=ys, mask=mask,
      slot=np.broadcast_to(slots.astype(np.int32), (steps, g)).copy())


def cohort_dataset(clients: Sequence[tuple[np.ndarray, np.ndarray, int]], *,
                   batch_size: int, epochs: int,
                   slots: Optional[Sequence[int]] = None) -> tf.data.Dataset:
  """`stack_clients` as a dataset of cohort steps (one TFF client's data)."""
  return tf.data.Dataset.from_tensor_slices(stack_clients(
      clients, batch_size=batch_size, epochs=epochs, slots=slots))

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
import functools
from typing import Callable, Optional, Sequence

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


def group(sizes: Sequence[int], size: int) -> list[list[int]]:
  """The round's cohorts: positions in the round, G at a time by size.

  A cohort takes as many steps as its largest client, so clients of similar
  size share one. A client's position among the round's K picked clients
  is its slot (its Federated Dropout mask key), as in a per-client round.
  The grouping cannot change the result: every per-client step is the
  client's own, and the server sums.

  Args:
    sizes: The examples of each picked client, in picked order.
    size: G, clients per cohort (dividing ``len(sizes)``).

  Returns:
    ``K / G`` lists of G positions (slots) into `sizes`.
  """
  order = sorted(range(len(sizes)), key=lambda j: sizes[j])
  return [order[a:a + size] for a in range(0, len(order), size)]


def stack_rows(x, y, sizes, shuffle_seeds, slots, *, batch_size: int,
               epochs: int) -> collections.OrderedDict:
  """A cohort's steps from its clients' rows (TensorFlow ops).

  The one implementation of the stacking: the driver runs it on the arrays
  it holds (`stack_clients`), a remote worker inside the computation that
  reads the rows from its store (`runtime/feed.py`).

  Args:
    x: float32 ``[sum(sizes), ...]``: client 0's rows, then client 1's, ...
    y: int32 ``[sum(sizes)]`` labels, in the same order.
    sizes: int ``[G]`` examples per client (each ``>= 1``).
    shuffle_seeds: int ``[G]`` each client's shuffle seed.
    slots: int32 ``[G]`` each client's slot in the round.
    batch_size: B, rows per batch.
    epochs: E, passes over each client's rows.

  Returns:
    ``OrderedDict(x [S, G, R, ...], y [S, G, R], mask [S, G, R],
    slot [S, G])`` with ``L_g = E·n_g``, ``S = ceil(max L_g / B)`` and
    ``R = min(B, max L_g)``: row i of client g's visiting order is row
    ``i mod B`` of its step ``i div B``. When every client holds fewer than
    B examples no batch can be full, and padding to B would only move zeros
    (5x the data for 4-example clients in batches of 20).
  """
  b = tf.constant(int(batch_size), tf.int64)
  sizes = tf.cast(sizes, tf.int64)
  lengths = int(epochs) * sizes
  g = tf.size(sizes, out_type=tf.int64)
  client = tf.repeat(tf.range(g), lengths)
  # i, each visited row's index in its client's order.
  i = tf.range(tf.reduce_sum(lengths)) - tf.repeat(
      tf.cumsum(lengths, exclusive=True), lengths)
  source = tf.repeat(tf.cumsum(sizes, exclusive=True), lengths) + (
      federated_data.client_orders(sizes, epochs, shuffle_seeds))
  longest = tf.reduce_max(lengths)
  shape = tf.stack([(longest + b - 1) // b, g, tf.minimum(b, longest)])
  where = tf.stack([i // b, client, i % b], axis=1)

  def place(values):
    values = tf.convert_to_tensor(values)
    return tf.scatter_nd(where, values, tf.concat(
        [shape, tf.shape(values, out_type=tf.int64)[1:]], 0))

  return collections.OrderedDict(
      x=place(tf.gather(x, source)), y=place(tf.gather(y, source)),
      mask=place(tf.ones_like(source, tf.float32)),
      slot=tf.tile(tf.cast(slots, tf.int32)[tf.newaxis], [shape[0], 1]))


@functools.lru_cache(maxsize=None)
def _traced_stack_rows(input_shape: tuple[int, ...], batch_size: int,
                       epochs: int) -> Callable[..., collections.OrderedDict]:
  return tf.function(
      functools.partial(stack_rows, batch_size=batch_size, epochs=epochs),
      input_signature=[tf.TensorSpec([None, *input_shape], tf.float32),
                       tf.TensorSpec([None], tf.int32),
                       tf.TensorSpec([None], tf.int64),
                       tf.TensorSpec([None], tf.int64),
                       tf.TensorSpec([None], tf.int32)], autograph=False)


def _stacked(clients: Sequence[tuple[np.ndarray, np.ndarray, int]],
             batch_size: int, epochs: int,
             slots: Optional[Sequence[int]]) -> collections.OrderedDict:
  """`stack_rows` of clients ``(x, y, shuffle_seed)``, as tensors."""
  if not clients:
    raise federated_data.DataError('a cohort needs at least one client')
  if batch_size < 1 or epochs < 1:
    raise federated_data.DataError(
        f'batch_size={batch_size} and epochs={epochs} must be >= 1')
  shape = clients[0][0].shape[1:]
  for x, y, _ in clients:
    if x.dtype != np.float32 or y.dtype != np.int32 or len(y) == 0:
      raise federated_data.DataError(
          f'client arrays must be non-empty float32/int32, got '
          f'{x.dtype}/{y.dtype} with {len(y)} examples')
    if x.shape[1:] != shape or len(x) != len(y):
      raise federated_data.DataError(
          f'client arrays x {x.shape} / y {y.shape} do not match x '
          f'[n, {", ".join(map(str, shape))}] / y [n]')
  g = len(clients)
  slots = np.arange(g) if slots is None else np.asarray(slots)
  if slots.shape != (g,):
    raise federated_data.DataError(f'{len(slots)} slots for {g} clients')
  return _traced_stack_rows(tuple(shape), int(batch_size), int(epochs))(
      np.concatenate([x for x, _, _ in clients]),
      np.concatenate([y for _, y, _ in clients]),
      np.array([len(y) for _, y, _ in clients], np.int64),
      np.array([s for _, _, s in clients], np.int64),
      slots.astype(np.int32))


def stack_clients(clients: Sequence[tuple[np.ndarray, np.ndarray, int]], *,
                  batch_size: int, epochs: int,
                  slots: Optional[Sequence[int]] = None
                  ) -> collections.OrderedDict:
  """`stack_rows` of clients ``(x, y, shuffle_seed)``, as numpy arrays.

  `slots` are the clients' slots in the round (default 0..G-1).

  Raises:
    federated_data.DataError: A client has no examples, wrong dtypes or
      shapes, or `slots` does not match the clients.
  """
  return collections.OrderedDict(
      (k, v.numpy()) for k, v in _stacked(clients, batch_size, epochs,
                                          slots).items())


def cohort_dataset(clients: Sequence[tuple[np.ndarray, np.ndarray, int]], *,
                   batch_size: int, epochs: int,
                   slots: Optional[Sequence[int]] = None) -> tf.data.Dataset:
  """`stack_clients` as a dataset of cohort steps (one TFF client's data)."""
  return tf.data.Dataset.from_tensor_slices(
      _stacked(clients, batch_size, epochs, slots))

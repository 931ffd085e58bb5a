"""A federated classification dataset and its per-client tf.data input.

Every dataset of the project (embedded MNIST, federated EMNIST, CIFAR-10/100,
the synthetic(alpha, beta) generator) is handed to the training code as a
:class:`FederatedData`: named clients whose examples are loaded (or generated)
on demand, plus one centralised test split. Features are finite float32
arrays shaped ``[n, *input_shape]`` whose values lie in the dataset's declared
``value_range`` (``(0, 1)`` for the image datasets, 0 = black/background for
the digits; ``None`` = any finite value, e.g. Gaussian features); labels are
int32 class indices in ``[0, num_classes)``.

:func:`make_client_dataset` turns one client's arrays into the
``tf.data.Dataset`` of ``OrderedDict(x=..., y=...)`` batches that TFF's
learning processes consume; :func:`element_spec` is its element type.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf


class DataError(ValueError):
  """Data could not be loaded or partitioned (the message says what/where)."""


class DataNotFoundError(DataError):
  """A cache file is missing; the message names every expected path."""


ClientLoader = Callable[[str], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """Clients with lazily loaded examples, and a centralised test split.

  Attributes:
    name: Dataset name as configured (e.g. ``'mnist_embedded'``).
    input_shape: Shape of one example's features, e.g. ``(28, 28, 1)``
      (height, width, channels) for MNIST or ``(60,)`` for synthetic.
    num_classes: Number of label classes; labels lie in ``[0, num_classes)``.
    client_ids: Client identifiers in a stable, sorted order (e.g.
      ``'client_0000'``, ...); samplers index into this tuple.
    get_client: Loads one client: ``client_id -> (x, y)`` with ``x`` float32
      ``[n, *input_shape]`` in `value_range` and ``y`` int32 ``[n]``,
      ``n >= 1``. Use :meth:`client_arrays`, which checks (and caches) the
      result.
    test_x: Test features, float32 ``[n_test, *input_shape]`` in
      `value_range`.
    test_y: Test labels, int32 ``[n_test]``.
    client_sizes: Optional number of examples of every client, known without
      loading it (e.g. from partition indices, a database count or a
      generator's size law). If given, :meth:`client_size` and :meth:`sizes`
      use it and :meth:`client_arrays` checks that the loaded arrays have
      exactly this many examples.
    value_range: ``(low, high)``: every feature value must lie in
      ``[low, high]``; ``(0.0, 1.0)`` (the default) for images. ``None``
      declares unbounded features; they must still be finite.
    cache_clients: Keep every loaded client in memory (the default: slicing
      a partition or reading a database is worth doing once). A generated
      dataset whose clients are cheap to rebuild and too many to hold sets
      it False; :meth:`client_arrays` then calls `get_client` every time.
  """

  name: str
  input_shape: tuple[int, ...]
  num_classes: int
  client_ids: tuple[str, ...] = dataclasses.field(repr=False)
  get_client: ClientLoader = dataclasses.field(repr=False)
  test_x: np.ndarray = dataclasses.field(repr=False)
  test_y: np.ndarray = dataclasses.field(repr=False)
  client_sizes: Optional[Mapping[str, int]] = dataclasses.field(
      default=None, repr=False)
  value_range: Optional[tuple[float, float]] = (0.0, 1.0)
  cache_clients: bool = True
  _cache: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(
      default_factory=dict, init=False, repr=False, compare=False)
  _id_set: frozenset[str] = dataclasses.field(
      default=frozenset(), init=False, repr=False, compare=False)
  _sizes: Optional[np.ndarray] = dataclasses.field(
      default=None, init=False, repr=False, compare=False)

  def __post_init__(self):
    object.__setattr__(self, 'input_shape',
                       tuple(int(d) for d in self.input_shape))
    object.__setattr__(self, 'client_ids', tuple(self.client_ids))
    object.__setattr__(self, '_id_set', frozenset(self.client_ids))
    if not self.client_ids:
      raise DataError(f'dataset {self.name}: has no clients')
    if len(set(self.client_ids)) != len(self.client_ids):
      raise DataError(f'dataset {self.name}: client ids are not unique')
    if list(self.client_ids) != sorted(self.client_ids):
      raise DataError(f'dataset {self.name}: client ids are not sorted')
    if self.num_classes < 1:
      raise DataError(
          f'dataset {self.name}: num_classes={self.num_classes} must be >= 1')
    if self.value_range is not None:
      bounds = np.asarray(self.value_range, dtype=np.float64)
      if bounds.shape != (2,) or not (np.all(np.isfinite(bounds)) and
                                      bounds[0] < bounds[1]):
        raise DataError(
            f'dataset {self.name}: value_range={self.value_range!r} must be '
            'finite (low, high) with low < high, or None')
      object.__setattr__(self, 'value_range',
                         (float(bounds[0]), float(bounds[1])))
    if self.client_sizes is not None:
      missing = [c for c in self.client_ids if c not in self.client_sizes]
      if missing:
        raise DataError(
            f'dataset {self.name}: client_sizes lacks clients {missing[:5]}')
    self._check_arrays(self.test_x, self.test_y, 'test split')
    if len(self.test_y) == 0:  # pylint: disable=g-explicit-length-test
      raise DataError(f'dataset {self.name}: the test split is empty')

  def _check_arrays(self, x, y, where: str) -> None:
    """Raises DataError unless (x, y) follow the documented dtypes/shapes."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
      raise DataError(f'dataset {self.name}, {where}: x must be a float32 '
                      f'array, got {getattr(x, "dtype", type(x))}')
    if not isinstance(y, np.ndarray) or y.dtype != np.int32:
      raise DataError(f'dataset {self.name}, {where}: y must be an int32 '
                      f'array, got {getattr(y, "dtype", type(y))}')
    if x.shape[1:] != self.input_shape or y.shape != x.shape[:1]:
      raise DataError(
          f'dataset {self.name}, {where}: x has shape {x.shape} and y '
          f'{y.shape}; expected [n, {", ".join(map(str, self.input_shape))}] '
          'and [n]')
    if y.size and (y.min() < 0 or y.max() >= self.num_classes):
      raise DataError(
          f'dataset {self.name}, {where}: labels {y.min()}..{y.max()} are '
          f'outside 0..{self.num_classes - 1}')
    if not x.size:
      return
    low, high = x.min(), x.max()
    # NaN propagates through min/max, and inf fails isfinite: one test each.
    if not (np.isfinite(low) and np.isfinite(high)):
      raise DataError(
          f'dataset {self.name}, {where}: x has non-finite values (NaN or '
          'inf)')
    if self.value_range is not None and (
        low < self.value_range[0] or high > self.value_range[1]):
      raise DataError(
          f'dataset {self.name}, {where}: values {low}..{high} are outside '
          f'[{self.value_range[0]:g}, {self.value_range[1]:g}]')

  def _require_known(self, client_id: str) -> None:
    if client_id not in self._id_set:
      raise DataError(
          f'dataset {self.name}: unknown client id {client_id!r} '
          f'({len(self.client_ids)} clients, from {self.client_ids[0]!r} '
          f'to {self.client_ids[-1]!r})')

  def client_arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The examples of one client, cached after the first load if asked.

    Args:
      client_id: One of :attr:`client_ids`.

    Returns:
      ``(x, y)``: float32 ``[n, *input_shape]`` features in `value_range` and
      int32 ``[n]`` labels, ``n >= 1``. With `cache_clients` the arrays are
      shared with the cache; do not modify them.

    Raises:
      DataError: `client_id` is unknown, or the loader returned arrays of the
        wrong dtype, shape, size or value range.
    """
    cached = self._cache.get(client_id)
    if cached is not None:
      return cached
    self._require_known(client_id)
    x, y = self.get_client(client_id)
    where = f'client {client_id!r}'
    self._check_arrays(x, y, where)
    if len(y) == 0:  # pylint: disable=g-explicit-length-test
      raise DataError(f'dataset {self.name}, {where}: has no examples')
    if (self.client_sizes is not None and
        len(y) != self.client_sizes[client_id]):
      raise DataError(
          f'dataset {self.name}, {where}: loaded {len(y)} examples but '
          f'{self.client_sizes[client_id]} were expected')
    if self.cache_clients:
      self._cache[client_id] = (x, y)
    return x, y

  def client_size(self, client_id: str) -> int:
    """Number of examples of `client_id`.

    Args:
      client_id: One of :attr:`client_ids`.

    Returns:
      ``client_sizes[client_id]`` if sizes are known, else the length of the
      (then loaded and cached) client.

    Raises:
      DataError: `client_id` is unknown or cannot be loaded.
    """
    if self.client_sizes is not None:
      self._require_known(client_id)
      return int(self.client_sizes[client_id])
    return len(self.client_arrays(client_id)[1])

  def sizes(self) -> np.ndarray:
    """Number of examples of every client, in :attr:`client_ids` order.

    Returns:
      int64 ``[num_clients]``, computed once (from `client_sizes` without
      loading any client, else by loading every client). Read-only.
    """
    if self._sizes is None:
      if self.client_sizes is not None:
        sizes = np.fromiter((self.client_sizes[c] for c in self.client_ids),
                            dtype=np.int64, count=len(self.client_ids))
      else:
        sizes = np.array([len(self.client_arrays(c)[1])
                          for c in self.client_ids], dtype=np.int64)
      sizes.flags.writeable = False
      object.__setattr__(self, '_sizes', sizes)
    return self._sizes

  def label_histogram(self) -> np.ndarray:
    """Label counts per client.

    Returns:
      int64 ``[num_clients, num_classes]``; row ``i`` counts the labels of
      ``client_ids[i]`` (loading every client).
    """
    return np.stack([
        np.bincount(self.client_arrays(c)[1], minlength=self.num_classes)
        for c in self.client_ids
    ]).astype(np.int64)


def element_spec(
    input_shape: tuple[int, ...],
) -> collections.OrderedDict[str, tf.TensorSpec]:
  """The element type of :func:`make_client_dataset`'s batches.

  Args:
    input_shape: Shape of one example's features, e.g. ``(28, 28, 1)``.

  Returns:
    ``OrderedDict(x=TensorSpec([None, *input_shape], float32),
    y=TensorSpec([None], int32))``.
  """
  return collections.OrderedDict(
      x=tf.TensorSpec([None, *input_shape], tf.float32),
      y=tf.TensorSpec([None], tf.int32),
  )


def make_client_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    shuffle_seed: int,
) -> tf.data.Dataset:
  """One client's local training data as batches of ``OrderedDict(x, y)``.

  The examples are visited ``epochs`` times in the order of
  :func:`client_order` (a fresh uniformly random permutation per pass that
  depends on `shuffle_seed` only, not on TensorFlow's global seed), then cut
  into consecutive batches: ``ceil(epochs * n / batch_size)`` batches, the
  last one holding the remainder (a batch may span two passes). These are
  exactly the batches of :func:`batches_in_order` on the same order, which is
  how remote workers build the dataset from the same seed
  (`tff_compress.data.store`, `tff_compress.runtime.feed`).

  The rows are gathered here, in numpy, and the dataset holds them in visiting
  order (``epochs * n`` rows: for ``epochs > 1``, `epochs` copies of the
  client's data). That is an order of magnitude cheaper than tracing a
  gathering ``Dataset.map`` function per client, which dominated the driver's
  share of a round of many small clients (``benchmarks/fedavg_overhead.py
  --clients=...`` measures both).

  Args:
    x: float32 ``[n, ...]`` features.
    y: int32 ``[n]`` labels.
    batch_size: Examples per batch, ``>= 1``.
    epochs: Passes over the data, ``>= 1``.
    shuffle_seed: Non-negative seed of the permutations.

  Returns:
    A dataset with element spec :func:`element_spec` of ``x.shape[1:]``.

  Raises:
    DataError: The arrays are empty, of mismatched length or wrong dtype, or
      an argument is out of range.
  """
  x = np.asarray(x)
  y = np.asarray(y)
  if x.dtype != np.float32 or y.dtype != np.int32:
    raise DataError(f'client arrays must be float32/int32, got '
                    f'{x.dtype}/{y.dtype}')
  if y.ndim != 1 or len(x) != len(y) or len(y) == 0:
    raise DataError(f'client arrays must be non-empty with one label per '
                    f'example, got x {x.shape} and y {y.shape}')
  if batch_size < 1 or epochs < 1:
    raise DataError(f'batch_size={batch_size} and epochs={epochs} must be >= 1')
  if shuffle_seed < 0:
    raise DataError(f'shuffle_seed={shuffle_seed} must be >= 0')
  order = visiting_order(len(y), epochs, shuffle_seed)
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x[order], y=y[order])).batch(batch_size)


def visiting_order(n: int, epochs: int, shuffle_seed: int) -> np.ndarray:
  """:func:`client_order` as a numpy int64 array (the driver's copy).

  The rows a client visits, in order; consecutive `batch_size` slices of
  it are its batches (:func:`make_client_dataset`).
  """
  return _traced_client_order(epochs)(
      np.int64(n), np.int64(shuffle_seed)).numpy()


def visiting_orders(sizes: Sequence[int], epochs: int,
                    shuffle_seeds: Sequence[int]) -> list[np.ndarray]:
  """:func:`visiting_order` of many clients in one TensorFlow call.

  Equal to ``[visiting_order(n, epochs, s) for n, s in zip(...)]``; one
  graph call instead of one per client, which matters for a cohort of
  hundreds of small clients (`cohorts/data.py`).
  """
  sizes = np.asarray(sizes, np.int64)
  if not len(sizes):
    return []
  flat = _traced_client_orders(epochs)(
      sizes, np.asarray(shuffle_seeds, np.int64)).numpy()
  return np.split(flat, np.cumsum(epochs * sizes)[:-1])


@functools.lru_cache(maxsize=None)
def _traced_client_orders(epochs: int) -> Callable[..., tf.Tensor]:
  """:func:`client_orders` for `epochs` passes, traced once per `epochs`."""
  return tf.function(
      lambda sizes, seeds: client_orders(sizes, epochs, seeds),
      input_signature=[tf.TensorSpec([None], tf.int64)] * 2, autograph=False)


def client_orders(sizes, epochs: int, shuffle_seeds) -> tf.Tensor:
  """The :func:`client_order` s of many clients, concatenated.

  Args:
    sizes: int ``[G]`` examples per client (each ``>= 1``).
    epochs: Number of passes (a Python int).
    shuffle_seeds: int ``[G]`` non-negative seeds.

  Returns:
    int64 ``[epochs * sum(sizes)]``: client 0's order, then client 1's, ...
    (indices into each client's own rows).
  """
  sizes = tf.cast(sizes, tf.int64)
  seeds = tf.cast(shuffle_seeds, tf.int64)

  def body(i, out):
    return i + 1, out.write(i, client_order(sizes[i], epochs, seeds[i]))

  count = tf.size(sizes)
  _, out = tf.while_loop(
      lambda i, _: i < count, body,
      (tf.constant(0), tf.TensorArray(tf.int64, size=count,
                                      infer_shape=False,
                                      element_shape=[None])))
  return out.concat()


@functools.lru_cache(maxsize=None)
def _traced_client_order(epochs: int) -> Callable[..., tf.Tensor]:
  """:func:`client_order` for `epochs` passes, traced once per `epochs`.

  One call of the traced function replaces the eager dispatch of the order's
  few ops per pass, which costs several times more per client.
  """
  return tf.function(
      lambda n, seed: client_order(n, epochs, seed),
      input_signature=[tf.TensorSpec([], tf.int64)] * 2, autograph=False)


def client_order(n, epochs: int, shuffle_seed) -> tf.Tensor:
  """Example indices of `epochs` passes, each a fresh random permutation.

  Pass ``e`` is ``stateless_shuffle(range(n), seed=(shuffle_seed, e))`` with
  TensorFlow's counter-based Philox generator, so the order is a function of
  ``(n, epochs, shuffle_seed)`` only and is the same eagerly on the driver and
  inside a graph on a remote TFF worker.

  Args:
    n: Number of examples (int or scalar integer tensor), ``>= 1``.
    epochs: Number of passes (a Python int).
    shuffle_seed: Non-negative seed (int or scalar integer tensor).

  Returns:
    int64 ``[epochs * n]``.
  """
  n = tf.cast(n, tf.int64)
  seed = tf.cast(shuffle_seed, tf.int64)
  return tf.concat([
      tf.random.experimental.stateless_shuffle(
          tf.range(n), seed=tf.stack([seed, tf.constant(e, tf.int64)]),
          alg='philox')
      for e in range(epochs)
  ], axis=0)


def batches_in_order(x, y, order, batch_size: int) -> tf.data.Dataset:
  """Batches of ``OrderedDict(x, y)`` taking the rows of `order` in turn.

  Builds the dataset inside a graph (remote workers,
  `tff_compress.data.store`) without copying the rows: the batches equal
  those of :func:`make_client_dataset` for the same order.

  Args:
    x: float32 ``[n, ...]`` features (array or tensor).
    y: int32 ``[n]`` labels.
    order: int64 row indices, e.g. from :func:`client_order`.
    batch_size: Rows per batch; the last batch holds the remainder.

  Returns:
    A dataset with element spec :func:`element_spec` of ``x.shape[1:]``.
  """
  # The client's arrays enter the graph once (from_tensors, repeated without
  # copying); batches gather rows by index. Nothing is captured by the map
  # function, so TFF can serialize the dataset.
  arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
  indices = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

  def gather(xy, idx):
    return collections.OrderedDict(
        x=tf.gather(xy[0], idx), y=tf.gather(xy[1], idx))

  return tf.data.Dataset.zip((arrays, indices)).map(gather)


def eval_bounds(num_test: int, num_clients: int) -> list[tuple[int, int]]:
  """The test split cut into ``min(num_clients, num_test)`` contiguous slices.

  Returns:
    ``[(start, stop), ...]`` with ``stop - start`` differing by at most 1.
  """
  num = max(1, min(num_clients, num_test))
  bounds = np.linspace(0, num_test, num + 1).astype(int)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

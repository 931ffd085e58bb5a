"""A federated image-classification dataset and its per-client tf.data input.

Every dataset of the project (embedded MNIST, federated EMNIST, CIFAR-10/100)
is handed to the training code as a :class:`FederatedData`: named clients whose
examples are loaded on demand, plus one centralised test split. Images are
float32 with values in [0, 1] (0 = black/background for the digit datasets),
shaped ``[n, *input_shape]``; labels are int32 class indices in
``[0, num_classes)``.

:func:`make_client_dataset` turns one client's arrays into the
``tf.data.Dataset`` of ``OrderedDict(x=..., y=...)`` batches that TFF's
learning processes consume; :func:`element_spec` is its element type.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Mapping, Optional

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
    input_shape: Shape of one image, e.g. ``(28, 28, 1)`` (height, width,
      channels).
    num_classes: Number of label classes; labels lie in ``[0, num_classes)``.
    client_ids: Client identifiers in a stable, sorted order (e.g.
      ``'client_0000'``, ...); samplers index into this tuple.
    get_client: Loads one client: ``client_id -> (x, y)`` with ``x`` float32
      ``[n, *input_shape]`` in [0, 1] and ``y`` int32 ``[n]``, ``n >= 1``. Use
      :meth:`client_arrays`, which checks and caches the result.
    test_x: Test images, float32 ``[n_test, *input_shape]`` in [0, 1].
    test_y: Test labels, int32 ``[n_test]``.
    client_sizes: Optional number of examples of every client, known without
      loading it (e.g. from partition indices or a database count). If given,
      :meth:`client_size` uses it and :meth:`client_arrays` checks that the
      loaded arrays have exactly this many examples.
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
  _cache: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(
      default_factory=dict, init=False, repr=False, compare=False)
  _id_set: frozenset[str] = dataclasses.field(
      default=frozenset(), init=False, repr=False, compare=False)

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
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
      raise DataError(
          f'dataset {self.name}, {where}: pixels {x.min()}..{x.max()} are '
          'outside [0, 1]')

  def _require_known(self, client_id: str) -> None:
    if client_id not in self._id_set:
      raise DataError(
          f'dataset {self.name}: unknown client id {client_id!r} '
          f'({len(self.client_ids)} clients, from {self.client_ids[0]!r} '
          f'to {self.client_ids[-1]!r})')

  def client_arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The examples of one client, loaded once and then cached.

    Args:
      client_id: One of :attr:`client_ids`.

    Returns:
      ``(x, y)``: float32 ``[n, *input_shape]`` images in [0, 1] and int32
      ``[n]`` labels, ``n >= 1``. The arrays are shared with the cache; do not
      modify them.

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
    input_shape: Shape of one image, e.g. ``(28, 28, 1)``.

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
  into consecutive batches by :func:`batches_in_order`: ``ceil(epochs * n /
  batch_size)`` batches, the last one holding the remainder (a batch may span
  two passes). Remote workers build the same dataset from the same seed with
  the same two functions (`tff_compress.data.store`, `runtime.feed`).

  Args:
    x: float32 ``[n, ...]`` images.
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
                    f'image, got x {x.shape} and y {y.shape}')
  if batch_size < 1 or epochs < 1:
    raise DataError(f'batch_size={batch_size} and epochs={epochs} must be >= 1')
  if shuffle_seed < 0:
    raise DataError(f'shuffle_seed={shuffle_seed} must be >= 0')
  order = client_order(len(y), epochs, shuffle_seed)
  return batches_in_order(x, y, order, batch_size)


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

  Args:
    x: float32 ``[n, ...]`` images (array or tensor).
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

"""Seeded partitions of a labelled dataset into federated clients.

Each partitioner takes the label array of a centralised training set and
returns one int64 array of example indices per client. Every example is
assigned to exactly one client, no client is empty, each client's indices are
sorted, and the result depends only on the arguments (the randomness is
``np.random.default_rng(seed)``). A request that cannot be met raises
:class:`~tff_compress.data.federated_data.DataError` naming the parameters.

* ``iid``: a uniformly random permutation cut into `num_clients` near-equal
  parts (sizes differ by at most one).
* ``dirichlet``: label skew of Hsu et al. 2019, "Measuring the Effects of
  Non-Identical Data Distribution for Federated Visual Classification", as
  implemented in FedML / NIID-Bench: for every class ``k`` the fractions
  ``p_k ~ Dir(alpha * 1_N)`` over the ``N`` clients split that class's
  (shuffled) examples; small ``alpha`` gives clients few classes, large
  ``alpha`` approaches IID.
* ``shards``: pathological non-IID split of McMahan et al. 2017,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data":
  examples sorted by label are cut into ``N * shards_per_client`` shards and
  every client receives `shards_per_client` random shards.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from tff_compress.data import federated_data

DataError = federated_data.DataError

# The Dirichlet partitioner re-draws at most this many times to give every
# client its minimum number of examples.
DIRICHLET_MAX_DRAWS = 1000
# FedML / NIID-Bench's minimum client size for the Dirichlet partition.
DIRICHLET_DEFAULT_MIN_SIZE = 10


def _check_common(labels, num_clients: int, seed: int,
                  partition_name: str) -> np.ndarray:
  """Validates the shared arguments; returns labels as a 1-D int64 array."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(
        f'data.partition={partition_name!r}: labels must be a 1-D integer '
        f'array, got dtype {labels.dtype} and shape {labels.shape}')
  if labels.size and labels.min() < 0:
    raise DataError(
        f'data.partition={partition_name!r}: labels must be >= 0, got '
        f'{labels.min()}')
  if isinstance(num_clients, bool) or not isinstance(
      num_clients, (int, np.integer)) or num_clients < 1:
    raise DataError(
        f'data.partition={partition_name!r}: data.num_clients={num_clients!r} '
        'must be an integer >= 1')
  if num_clients > len(labels):
    raise DataError(
        f'data.partition={partition_name!r}: data.num_clients={num_clients} '
        f'exceeds the {len(labels)} training examples, so some client would '
        'be empty')
  if isinstance(seed, bool) or not isinstance(
      seed, (int, np.integer)) or seed < 0:
    raise DataError(
        f'data.partition={partition_name!r}: seed={seed!r} must be an '
        'integer >= 0')
  return labels.astype(np.int64)


def _sorted_parts(parts) -> list[np.ndarray]:
  return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition_iid(labels, num_clients: int, seed: int) -> list[np.ndarray]:
  """Uniformly random split into near-equal clients.

  Args:
    labels: Integer labels ``[n]`` (only their number matters here).
    num_clients: Number of clients ``N``, ``1 <= N <= n``.
    seed: Non-negative random seed.

  Returns:
    `N` sorted int64 index arrays; client ``i`` holds ``floor(n / N)`` or
    ``ceil(n / N)`` examples.

  Raises:
    DataError: An argument is invalid or ``N > n``.
  """
  labels = _check_common(labels, num_clients, seed, 'iid')
  order = np.random.default_rng(seed).permutation(len(labels))
  return _sorted_parts(np.array_split(order, num_clients))


def partition_dirichlet(
    labels,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: Optional[int] = None,
) -> list[np.ndarray]:
  """Label-skewed split with per-class Dirichlet(alpha) client fractions.

  One draw: for every class ``k`` (in increasing order), shuffle its ``n_k``
  examples, draw ``p ~ Dir(alpha, ..., alpha)`` over the ``N`` clients, set
  ``p_j = 0`` for clients that already hold at least ``n / N`` examples and
  renormalise (the FedML / NIID-Bench balancing step), then cut the shuffled
  class at ``floor(cumsum(p) * n_k)``. Draws are repeated (at most
  ``DIRICHLET_MAX_DRAWS`` times) until every client has at least `min_size`
  examples.

  Args:
    labels: Integer class labels ``[n]``.
    num_clients: Number of clients ``N``, ``1 <= N <= n``.
    alpha: Concentration ``> 0``; smaller is more skewed.
    seed: Non-negative random seed.
    min_size: Minimum examples per client. ``None`` means
      ``min(DIRICHLET_DEFAULT_MIN_SIZE, n // N)`` (FedML's 10 when the data
      allow it); must satisfy ``1 <= min_size <= n // N``.

  Returns:
    `N` sorted int64 index arrays.

  Raises:
    DataError: An argument is invalid, or no draw met `min_size`.
  """
  labels = _check_common(labels, num_clients, seed, 'dirichlet')
  n = len(labels)
  if not np.isfinite(alpha) or alpha <= 0:
    raise DataError(
        f'data.partition=\'dirichlet\': data.dirichlet_alpha={alpha!r} must '
        'be > 0')
  if min_size is None:
    min_size = min(DIRICHLET_DEFAULT_MIN_SIZE, n // num_clients)
  if not 1 <= min_size <= n // num_clients:
    raise DataError(
        f'data.partition=\'dirichlet\': min_size={min_size} must be in '
        f'[1, {n // num_clients}] for {n} examples and '
        f'data.num_clients={num_clients}')
  rng = np.random.default_rng(seed)
  by_class = [np.flatnonzero(labels == k) for k in np.unique(labels)]
  for _ in range(DIRICHLET_MAX_DRAWS):
    parts = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for members in by_class:
      members = rng.permutation(members)
      p = rng.dirichlet(np.full(num_clients, float(alpha)))
      # Clients already at or above the mean size get no more examples. At
      # least one client is below the mean while examples remain unassigned.
      p = np.where(sizes < n / num_clients, p, 0.0)
      total = p.sum()
      if total <= 0:  # every open client drew exactly 0.0 (underflow)
        p = (sizes < n / num_clients).astype(np.float64)
        total = p.sum()
      cuts = (np.cumsum(p / total) * len(members)).astype(np.int64)[:-1]
      for j, chunk in enumerate(np.split(members, cuts)):
        parts[j].append(chunk)
        sizes[j] += len(chunk)
    if sizes.min() >= min_size:
      return _sorted_parts(np.concatenate(chunks) for chunks in parts)
  raise DataError(
      f'data.partition=\'dirichlet\': no split of {n} examples into '
      f'data.num_clients={num_clients} clients with at least {min_size} '
      f'examples each in {DIRICHLET_MAX_DRAWS} draws at '
      f'data.dirichlet_alpha={alpha}; increase data.dirichlet_alpha or '
      'reduce data.num_clients')


def partition_shards(
    labels, num_clients: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
  """McMahan et al. 2017 label shards.

  The examples are shuffled, stably sorted by label, and cut into
  ``S = N * shards_per_client`` contiguous shards of ``floor(n / S)`` or
  ``ceil(n / S)`` examples; a random permutation of the shards gives client
  ``i`` shards ``perm[i * shards_per_client:(i + 1) * shards_per_client]``.
  A shard no larger than the smallest class spans at most two labels, so a
  client holds at most ``2 * shards_per_client`` (typically
  `shards_per_client`) distinct labels.

  Args:
    labels: Integer class labels ``[n]``.
    num_clients: Number of clients ``N``.
    shards_per_client: Shards per client, ``>= 1``, with ``S <= n``.
    seed: Non-negative random seed.

  Returns:
    `N` sorted int64 index arrays.

  Raises:
    DataError: An argument is invalid or there are fewer examples than shards.
  """
  labels = _check_common(labels, num_clients, seed, 'shards')
  if isinstance(shards_per_client, bool) or not isinstance(
      shards_per_client, (int, np.integer)) or shards_per_client < 1:
    raise DataError(
        f'data.partition=\'shards\': data.shards_per_client='
        f'{shards_per_client!r} must be an integer >= 1')
  num_shards = num_clients * shards_per_client
  if num_shards > len(labels):
    raise DataError(
        f'data.partition=\'shards\': data.num_clients={num_clients} x '
        f'data.shards_per_client={shards_per_client} = {num_shards} shards '
        f'exceed the {len(labels)} training examples')
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(len(labels))
  by_label = shuffled[np.argsort(labels[shuffled], kind='stable')]
  shards = np.array_split(by_label, num_shards)
  order = rng.permutation(num_shards)
  return _sorted_parts(
      np.concatenate([shards[s] for s in order[
          i * shards_per_client:(i + 1) * shards_per_client]])
      for i in range(num_clients))


Partitioner = Callable[..., list[np.ndarray]]


def _iid(labels, num_clients, seed, *, alpha, shards_per_client):
  del alpha, shards_per_client  # Unused by the IID split.
  return partition_iid(labels, num_clients, seed)


def _dirichlet(labels, num_clients, seed, *, alpha, shards_per_client):
  del shards_per_client  # Unused by the Dirichlet split.
  return partition_dirichlet(labels, num_clients, alpha, seed)


def _shards(labels, num_clients, seed, *, alpha, shards_per_client):
  del alpha  # Unused by the shard split.
  return partition_shards(labels, num_clients, shards_per_client, seed)


# Config name -> partitioner with the uniform signature
# ``fn(labels, num_clients, seed, *, alpha, shards_per_client)``.
PARTITIONERS: dict[str, Partitioner] = {
    'iid': _iid,
    'dirichlet': _dirichlet,
    'shards': _shards,
}


def partition(
    name: str,
    labels,
    num_clients: int,
    seed: int,
    *,
    alpha: float,
    shards_per_client: int,
) -> list[np.ndarray]:
  """Runs the registered partitioner `name`.

  Args:
    name: One of :data:`PARTITIONERS` (``'iid'``, ``'dirichlet'``,
      ``'shards'``).
    labels: Integer class labels ``[n]``.
    num_clients: Number of clients.
    seed: Non-negative random seed.
    alpha: Dirichlet concentration (used by ``'dirichlet'`` only).
    shards_per_client: Shards per client (used by ``'shards'`` only).

  Returns:
    One sorted int64 index array per client.

  Raises:
    DataError: `name` is unknown or the partitioner rejects its arguments.
  """
  if name not in PARTITIONERS:
    raise DataError(
        f'data.partition={name!r} is not one of {sorted(PARTITIONERS)}')
  return PARTITIONERS[name](labels, num_clients, seed, alpha=alpha,
                            shards_per_client=shards_per_client)

"""Dataset registry: the ``data`` config section -> a FederatedData.

The builders read the typed settings of the section,
`tff_compress.data.settings.DataSettings` (what `config_lib.settings`
returns for a validated config; every key, its default, rule and doc are
declared there). Any object with the same attributes works too (e.g. a
config's ``data`` ConfigDict); a missing one is a :class:`DataError`. The
keys each data set reads:

* ``name``: one of :data:`DATASETS`;
* ``num_clients``: number of clients to partition into; for ``emnist`` the
  maximum number of writers kept (the first ones in sorted id order); for
  ``synthetic*`` the number of clients generated;
* ``partition``, ``dirichlet_alpha``, ``shards_per_client``: the partitioner
  and its parameters (see :mod:`tff_compress.data.partition`), for the
  array datasets ``mnist_embedded``, ``cifar10`` and ``cifar100``; EMNIST
  keeps its natural per-writer clients and ignores them;
* ``test_fraction``: held-out fraction per class (``mnist_embedded`` only;
  the other datasets have official test splits);
* ``cache_dir``: local cache of ``emnist`` / ``cifar*`` (empty = the
  library default, ``~/.tff`` or ``~/.keras/datasets``); nothing is
  downloaded;
* ``only_digits``: EMNIST with 10 digit classes (True) or 62 classes;
* ``synthetic_alpha``, ``synthetic_beta`` (floats >= 0) and
  ``synthetic_sizes`` (one of :data:`synthetic.SIZE_LAWS`): the
  ``synthetic`` generator (:mod:`tff_compress.data.synthetic`), whose
  ``num_clients`` clients are generated on demand; ``synthetic_iid`` reads
  only ``synthetic_sizes`` (and ``num_clients``).
"""

from __future__ import annotations

from typing import Any, Callable
import zlib

import numpy as np

from tff_compress.data import cifar
from tff_compress.data import embedded_mnist
from tff_compress.data import emnist
from tff_compress.data import federated_data
from tff_compress.data import partition
from tff_compress.data import synthetic

DataError = federated_data.DataError
FederatedData = federated_data.FederatedData
Builder = Callable[[Any, int], FederatedData]


def _field(cfg: Any, key: str) -> Any:
  try:
    return getattr(cfg, key)
  except (AttributeError, KeyError) as e:
    raise DataError(f'the data config has no field {key!r}') from e


def _check_seed(seed: Any) -> None:
  if isinstance(seed, bool) or not isinstance(
      seed, (int, np.integer)) or seed < 0:
    raise DataError(f'seed={seed!r} must be an integer >= 0')


def derived_seed(seed: int, purpose: str) -> int:
  """An independent 32-bit seed for one use of the run seed.

  Args:
    seed: The run's non-negative seed.
    purpose: A label such as ``'split'`` or ``'partition'``.

  Returns:
    ``SeedSequence([seed, crc32(purpose)])``'s first 32-bit word, so that
    different purposes get uncorrelated random streams.

  Raises:
    DataError: `seed` is not a non-negative integer.
  """
  _check_seed(seed)
  words = np.random.SeedSequence(
      [int(seed), zlib.crc32(purpose.encode())]).generate_state(1)
  return int(words[0])


def client_id(index: int, num_clients: int) -> str:
  """``'client_0007'``: zero-padded so that sorted order is index order."""
  width = max(4, len(str(num_clients - 1)))
  return f'client_{index:0{width}d}'


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    cfg: Any,
    seed: int,
) -> FederatedData:
  """Partitions a centralised training set into clients per `cfg`.

  Args:
    name: Dataset name.
    x_train: float32 ``[n, *input_shape]`` training images in [0, 1].
    y_train: int32 ``[n]`` training labels.
    x_test: float32 test images.
    y_test: int32 test labels.
    num_classes: Number of classes.
    cfg: Data config with ``partition``, ``num_clients``,
      ``dirichlet_alpha`` and ``shards_per_client``.
    seed: Non-negative seed of the partition.

  Returns:
    FederatedData with clients ``client_0000``, ... holding the partitioned
    examples (sliced out on first access).
  """
  num_clients = _field(cfg, 'num_clients')
  parts = partition.partition(
      _field(cfg, 'partition'), y_train, num_clients,
      derived_seed(seed, 'partition'),
      alpha=_field(cfg, 'dirichlet_alpha'),
      shards_per_client=_field(cfg, 'shards_per_client'))
  ids = tuple(client_id(i, len(parts)) for i in range(len(parts)))
  indices = dict(zip(ids, parts))

  def get_client(cid: str) -> tuple[np.ndarray, np.ndarray]:
    return x_train[indices[cid]], y_train[indices[cid]]

  return FederatedData(
      name=name,
      input_shape=tuple(x_train.shape[1:]),
      num_classes=num_classes,
      client_ids=ids,
      get_client=get_client,
      test_x=x_test,
      test_y=y_test,
      client_sizes={c: len(i) for c, i in indices.items()},
  )


def _mnist_embedded(cfg: Any, seed: int) -> FederatedData:
  x_train, y_train, x_test, y_test = embedded_mnist.load_embedded_mnist(
      _field(cfg, 'test_fraction'), derived_seed(seed, 'split'))
  return from_arrays('mnist_embedded', x_train, y_train, x_test, y_test,
                     embedded_mnist.NUM_CLASSES, cfg, seed)


def _cifar(num_classes: int) -> Builder:
  def build(cfg: Any, seed: int) -> FederatedData:
    x_train, y_train, x_test, y_test = cifar.load_cifar_arrays(
        _field(cfg, 'cache_dir'), num_classes)
    return from_arrays(f'cifar{num_classes}', x_train, y_train, x_test,
                       y_test, num_classes, cfg, seed)
  return build


def _emnist(cfg: Any, seed: int) -> FederatedData:
  del seed  # The writers are the clients; nothing is random.
  return emnist.load_emnist(
      _field(cfg, 'cache_dir'), bool(_field(cfg, 'only_digits')),
      max_clients=_field(cfg, 'num_clients'))


def _synthetic(iid: bool) -> Builder:
  def build(cfg: Any, seed: int) -> FederatedData:
    law = _field(cfg, 'synthetic_sizes')
    if law not in synthetic.SIZE_LAWS:
      raise DataError(f'data.synthetic_sizes={law!r} is not one of '
                      f'{sorted(synthetic.SIZE_LAWS)}')
    alpha, beta = ((0.0, 0.0) if iid else (_field(cfg, 'synthetic_alpha'),
                                           _field(cfg, 'synthetic_beta')))
    return synthetic_data(synthetic.SyntheticGenerator(
        _field(cfg, 'num_clients'), alpha, beta, iid=iid,
        size_law=synthetic.SIZE_LAWS[law],
        seed=derived_seed(seed, 'synthetic')))
  return build


def synthetic_data(generator: synthetic.SyntheticGenerator) -> FederatedData:
  """The generator's clients as a FederatedData, none of them stored.

  Args:
    generator: A synthetic(alpha, beta) generator.

  Returns:
    FederatedData ``'synthetic'`` (``'synthetic_iid'`` for the IID variant)
    with clients ``client_0000``, ... (client ``i`` is ``generator.client(i)``,
    generated on every access, never cached), unbounded features of shape
    ``(synthetic.DIM,)``, sizes known up front, and
    ``generator.test_split()`` as the test split.
  """
  n = generator.num_clients
  ids = tuple(client_id(i, n) for i in range(n))
  index = {c: i for i, c in enumerate(ids)}
  test_x, test_y, _ = generator.test_split()

  def get_client(cid: str) -> tuple[np.ndarray, np.ndarray]:
    return generator.client(index[cid])

  return FederatedData(
      name='synthetic_iid' if generator.iid else 'synthetic',
      input_shape=(synthetic.DIM,),
      num_classes=synthetic.NUM_CLASSES,
      client_ids=ids,
      get_client=get_client,
      test_x=test_x,
      test_y=test_y,
      client_sizes=dict(zip(ids, generator.sizes.tolist())),
      value_range=None,
      cache_clients=False,
  )


# Config ``data.name`` -> builder ``(cfg, seed) -> FederatedData``.
DATASETS: dict[str, Builder] = {
    'mnist_embedded': _mnist_embedded,
    'emnist': _emnist,
    'cifar10': _cifar(10),
    'cifar100': _cifar(100),
    'synthetic': _synthetic(iid=False),
    'synthetic_iid': _synthetic(iid=True),
}


def build_federated_data(cfg: Any, seed: int) -> FederatedData:
  """Builds the dataset described by the ``data`` config section.

  Args:
    cfg: The ``data`` settings (`data.settings.DataSettings`, see the module
      docstring).
    seed: Non-negative run seed. The embedded-MNIST split, the partition and
      the synthetic generator use independent seeds derived from it
      (:func:`derived_seed`); the result is the same for the same `cfg` and
      `seed`.

  Returns:
    The FederatedData; client examples are materialised on first access
    (generated on every access for ``synthetic*``).

  Raises:
    DataError: The name is unknown, a field is missing or invalid, or the
      data cannot be loaded or partitioned (DataNotFoundError for missing
      cache files).
  """
  name = _field(cfg, 'name')
  if name not in DATASETS:
    raise DataError(f'data.name={name!r} is not one of {sorted(DATASETS)}')
  _check_seed(seed)
  return DATASETS[name](cfg, seed)

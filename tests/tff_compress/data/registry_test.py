"""build_federated_data: every partitioner on the embedded MNIST digits."""

from __future__ import annotations

import os
import pickle

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np

from tff_compress.data import federated_data
from tff_compress.data import registry


def _cfg(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      name='mnist_embedded', num_clients=20, partition='iid',
      dirichlet_alpha=0.5, shards_per_client=2, test_fraction=0.2,
      cache_dir='', only_digits=True))
  cfg.update(overrides)
  return cfg


class RegistryTest(parameterized.TestCase):

  def test_registered_names(self):
    self.assertEqual(sorted(registry.DATASETS),
                     ['cifar10', 'cifar100', 'emnist', 'mnist_embedded',
                      'synthetic', 'synthetic_iid'])

  @parameterized.parameters('iid', 'dirichlet', 'shards')
  def test_mnist_embedded(self, partition_name):
    data = registry.build_federated_data(_cfg(partition=partition_name),
                                         seed=0)
    self.assertEqual(data.name, 'mnist_embedded')
    self.assertEqual(data.input_shape, (28, 28, 1))
    self.assertEqual(data.num_classes, 10)
    self.assertEqual(data.client_ids,
                     tuple(f'client_{i:04d}' for i in range(20)))
    self.assertEqual(data.test_x.shape, (1000, 28, 28, 1))
    self.assertEqual(data.test_y.dtype, np.int32)
    sizes = [data.client_size(c) for c in data.client_ids]
    self.assertEqual(sum(sizes), 4000)
    self.assertGreater(min(sizes), 0)
    hist = data.label_histogram()
    self.assertEqual(hist.shape, (20, 10))
    np.testing.assert_array_equal(hist.sum(axis=0), np.full(10, 400))
    np.testing.assert_array_equal(hist.sum(axis=1), sizes)
    x, y = data.client_arrays('client_0003')
    self.assertEqual(x.dtype, np.float32)
    self.assertEqual(x.shape, (len(y), 28, 28, 1))
    self.assertEqual(y.dtype, np.int32)
    distinct = (hist > 0).sum(axis=1)
    if partition_name == 'iid':
      self.assertTrue(np.all(distinct == 10))
    elif partition_name == 'shards':
      self.assertLessEqual(distinct.max(), 4)
      self.assertLessEqual(distinct.mean(), 2.5)

  def test_deterministic_for_a_seed(self):
    a = registry.build_federated_data(_cfg(partition='dirichlet'), seed=1)
    b = registry.build_federated_data(_cfg(partition='dirichlet'), seed=1)
    c = registry.build_federated_data(_cfg(partition='dirichlet'), seed=2)
    np.testing.assert_array_equal(a.label_histogram(), b.label_histogram())
    np.testing.assert_array_equal(a.test_y, b.test_y)
    self.assertFalse(np.array_equal(a.label_histogram(), c.label_histogram()))

  def test_test_split_is_disjoint_from_clients(self):
    data = registry.build_federated_data(_cfg(), seed=0)
    def keys(x):
      return set(map(bytes, (x.reshape(len(x), -1) * 255).astype(np.uint8)))
    train_keys = set()
    for cid in data.client_ids:
      train_keys |= keys(data.client_arrays(cid)[0])
    # (A few MNIST images could coincide; the 5k sample has none.)
    self.assertEmpty(train_keys & keys(data.test_x))

  def test_derived_seeds_differ_by_purpose(self):
    self.assertNotEqual(registry.derived_seed(0, 'split'),
                        registry.derived_seed(0, 'partition'))
    self.assertEqual(registry.derived_seed(3, 'split'),
                     registry.derived_seed(3, 'split'))

  def test_client_id_padding(self):
    self.assertEqual(registry.client_id(7, 50), 'client_0007')
    self.assertEqual(registry.client_id(7, 20000), 'client_00007')

  def test_cifar_from_cache(self):
    root = self.create_tempdir().full_path
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
      with open(os.path.join(folder, name), 'wb') as f:
        pickle.dump({b'data': rng.integers(0, 256, (20, 3072), np.uint8),
                     b'labels': [i % 10 for i in range(20)]}, f, protocol=2)
    data = registry.build_federated_data(
        _cfg(name='cifar10', cache_dir=root, num_clients=10,
             partition='shards', shards_per_client=1), seed=0)
    self.assertEqual(data.name, 'cifar10')
    self.assertEqual(data.input_shape, (32, 32, 3))
    self.assertEqual(data.num_classes, 10)
    self.assertLen(data.client_ids, 10)
    self.assertEqual(sum(data.client_size(c) for c in data.client_ids), 100)
    self.assertEqual(data.test_x.shape, (20, 32, 32, 3))

  def test_missing_caches_raise_data_not_found(self):
    empty = self.create_tempdir().full_path
    for name in ('emnist', 'cifar10', 'cifar100'):
      with self.assertRaisesRegex(federated_data.DataNotFoundError, empty):
        registry.build_federated_data(_cfg(name=name, cache_dir=empty), 0)

  def test_unknown_name(self):
    with self.assertRaisesRegex(
        federated_data.DataError,
        r"data.name='svhn' is not one of "
        r"\['cifar10', 'cifar100', 'emnist', 'mnist_embedded', 'synthetic', "
        r"'synthetic_iid'\]"):
      registry.build_federated_data(_cfg(name='svhn'), seed=0)

  def test_unknown_partition(self):
    with self.assertRaisesRegex(federated_data.DataError,
                                r"data.partition='random' is not one of"):
      registry.build_federated_data(_cfg(partition='random'), seed=0)

  def test_missing_field(self):
    cfg = _cfg()
    del cfg['test_fraction']
    with self.assertRaisesRegex(federated_data.DataError,
                                r"no field 'test_fraction'"):
      registry.build_federated_data(cfg, seed=0)

  def test_bad_seed(self):
    with self.assertRaisesRegex(federated_data.DataError, r'seed=-1'):
      registry.build_federated_data(_cfg(), seed=-1)

  def test_too_many_clients(self):
    with self.assertRaisesRegex(
        federated_data.DataError,
        r'data.num_clients=5000 exceeds the 4000 training examples'):
      registry.build_federated_data(_cfg(num_clients=5000), seed=0)


if __name__ == '__main__':
  absltest.main()

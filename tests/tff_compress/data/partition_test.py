"""Partitioners: coverage, determinism, skew and error messages."""

from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tff_compress.data import federated_data
from tff_compress.data import partition

# 10 balanced classes of 200 examples, in a scrambled order.
_LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 200))

# Case name -> (partitioner, its parameters).
_CASES = {
    'iid': ('iid', dict(alpha=0.5, shards_per_client=2)),
    'dirichlet': ('dirichlet', dict(alpha=0.5, shards_per_client=2)),
    'dirichlet_skewed': ('dirichlet', dict(alpha=0.1, shards_per_client=2)),
    'shards': ('shards', dict(alpha=0.5, shards_per_client=2)),
    'shards_5': ('shards', dict(alpha=0.5, shards_per_client=5)),
}


def _run(case, num_clients=20, seed=0):
  name, params = _CASES[case]
  return partition.partition(name, _LABELS, num_clients, seed, **params)


def _mean_label_entropy(labels, parts) -> float:
  """Mean over clients of the entropy (nats) of the client's label mix."""
  entropies = []
  for p in parts:
    freq = np.bincount(labels[p], minlength=10) / len(p)
    freq = freq[freq > 0]
    entropies.append(-(freq * np.log(freq)).sum())
  return float(np.mean(entropies))


class PartitionTest(parameterized.TestCase):

  @parameterized.parameters(*_CASES)
  def test_covers_every_example_exactly_once(self, case):
    parts = _run(case)
    self.assertLen(parts, 20)
    for p in parts:
      self.assertEqual(p.dtype, np.int64)
      self.assertGreater(len(p), 0)
      np.testing.assert_array_equal(p, np.sort(p))
    everything = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(everything),
                                  np.arange(len(_LABELS)))

  @parameterized.parameters('iid', 'dirichlet', 'shards')
  def test_deterministic_for_a_seed_and_different_across_seeds(self, case):
    a = _run(case, seed=7)
    b = _run(case, seed=7)
    c = _run(case, seed=8)
    for pa, pb in zip(a, b):
      np.testing.assert_array_equal(pa, pb)
    self.assertFalse(
        all(len(pa) == len(pc) and np.array_equal(pa, pc)
            for pa, pc in zip(a, c)))

  def test_iid_sizes_and_label_balance(self):
    parts = _run('iid', num_clients=10)
    self.assertEqual({len(p) for p in parts}, {200})
    for p in parts:
      counts = np.bincount(_LABELS[p], minlength=10)
      # 200 draws from 10 equal classes: each near 20 (binomial sd ~4.2).
      self.assertTrue(np.all(counts >= 5), counts)
      self.assertTrue(np.all(counts <= 40), counts)
    self.assertGreater(_mean_label_entropy(_LABELS, parts), 0.95 * np.log(10))

  def test_iid_uneven_sizes_differ_by_at_most_one(self):
    parts = partition.partition_iid(_LABELS, 7, seed=0)
    sizes = [len(p) for p in parts]
    self.assertLessEqual(max(sizes) - min(sizes), 1)
    self.assertEqual(sum(sizes), 2000)

  def test_dirichlet_skew_grows_as_alpha_shrinks(self):
    entropy = {}
    for alpha in (0.1, 1.0, 100.0):
      parts = partition.partition_dirichlet(_LABELS, 20, alpha, seed=3)
      entropy[alpha] = _mean_label_entropy(_LABELS, parts)
    self.assertLess(entropy[0.1], entropy[1.0])
    self.assertLess(entropy[1.0], entropy[100.0])
    self.assertGreater(entropy[100.0], 0.95 * np.log(10))
    self.assertLess(entropy[0.1], 0.5 * np.log(10))

  def test_dirichlet_respects_min_size(self):
    parts = partition.partition_dirichlet(_LABELS, 20, 0.1, seed=0)
    self.assertGreaterEqual(min(len(p) for p in parts),
                            partition.DIRICHLET_DEFAULT_MIN_SIZE)
    parts = partition.partition_dirichlet(_LABELS, 20, 0.5, seed=0,
                                          min_size=50)
    self.assertGreaterEqual(min(len(p) for p in parts), 50)

  def test_dirichlet_default_min_size_shrinks_for_small_data(self):
    labels = np.repeat(np.arange(2), 10)  # 20 examples, 10 clients: 2 each.
    parts = partition.partition_dirichlet(labels, 10, 100.0, seed=0)
    self.assertLen(parts, 10)
    self.assertGreaterEqual(min(len(p) for p in parts), 1)

  def test_shards_give_few_labels_per_client(self):
    for spc in (1, 2, 3):
      parts = partition.partition_shards(_LABELS, 20, spc, seed=0)
      distinct = [len(np.unique(_LABELS[p])) for p in parts]
      # A shard (<= 100 examples) is smaller than a class (200), so it spans
      # at most 2 labels.
      self.assertLessEqual(max(distinct), 2 * spc)
      self.assertLessEqual(np.mean(distinct), spc + 0.5)
      sizes = {len(p) for p in parts}
      # 20 * spc shards of 2000 // (20 * spc) or one more examples.
      self.assertLessEqual(max(sizes) - min(sizes), spc)
      self.assertEqual(sum(len(p) for p in parts), 2000)

  def test_shards_sizes_when_not_divisible(self):
    parts = partition.partition_shards(_LABELS[:1999], 7, 3, seed=1)
    sizes = [len(p) for p in parts]
    self.assertEqual(sum(sizes), 1999)
    self.assertLessEqual(max(sizes) - min(sizes), 3)

  def test_registry_names(self):
    self.assertEqual(sorted(partition.PARTITIONERS),
                     ['dirichlet', 'iid', 'shards'])

  def test_unknown_partition_name(self):
    with self.assertRaisesRegex(
        federated_data.DataError,
        r"data.partition='pathological' is not one of "
        r"\['dirichlet', 'iid', 'shards'\]"):
      partition.partition('pathological', _LABELS, 10, 0, alpha=0.5,
                          shards_per_client=2)

  @parameterized.named_parameters(
      ('more_clients_than_examples', 'iid', dict(num_clients=2001),
       r'data.num_clients=2001 exceeds the 2000 training examples'),
      ('zero_clients', 'dirichlet', dict(num_clients=0),
       r'data.num_clients=0 must be an integer >= 1'),
      ('bad_alpha', 'dirichlet', dict(alpha=0.0),
       r'data.dirichlet_alpha=0.0 must be > 0'),
      ('too_many_shards', 'shards',
       dict(num_clients=1000, shards_per_client=3),
       r'data.num_clients=1000 x data.shards_per_client=3 = 3000 shards '
       r'exceed the 2000'),
      ('zero_shards', 'shards', dict(shards_per_client=0),
       r'data.shards_per_client=0 must be an integer >= 1'),
      ('negative_seed', 'iid', dict(seed=-1), r'seed=-1 must be'),
      ('float_labels', 'iid', dict(labels=np.zeros(10)),
       r'labels must be a 1-D integer array'),
  )
  def test_invalid_arguments(self, name, overrides, message):
    kwargs = dict(labels=_LABELS, num_clients=10, seed=0, alpha=0.5,
                  shards_per_client=2)
    kwargs.update(overrides)
    with self.assertRaisesRegex(federated_data.DataError, message):
      partition.partition(name, kwargs.pop('labels'), kwargs.pop('num_clients'),
                          kwargs.pop('seed'), **kwargs)

  def test_dirichlet_impossible_request_names_parameters(self):
    # 10 classes over 100 clients with nearly one-hot fractions: most clients
    # stay empty in every draw.
    with self.assertRaisesRegex(
        federated_data.DataError,
        r'data.num_clients=100 .*at least 10 examples.*'
        r'data.dirichlet_alpha=0.001; increase data.dirichlet_alpha'):
      partition.partition_dirichlet(_LABELS, 100, 0.001, seed=0)

  def test_dirichlet_min_size_out_of_range(self):
    with self.assertRaisesRegex(federated_data.DataError,
                                r'min_size=201 must be in \[1, 200\]'):
      partition.partition_dirichlet(_LABELS, 10, 1.0, seed=0, min_size=201)


if __name__ == '__main__':
  absltest.main()

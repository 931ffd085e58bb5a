"""Each client's seeded, stratified held-out part; evaluation clients."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tests.tff_compress.personalization import personalization_testing
from tff_compress.data import federated_data
from tff_compress.personalization import split


def _data(sizes):
  return personalization_testing.fake_data(sizes, shape=(2, 2, 1))


class HeldOutMaskTest(parameterized.TestCase):

  @parameterized.parameters((0.25, 80), (0.5, 37), (0.1, 203), (0.33, 9))
  def test_holds_out_round_f_n_stratified(self, fraction, n):
    labels = np.random.default_rng(n).integers(0, 4, n)
    mask = split.held_out_mask(labels, fraction, seed=3, client_index=7)
    self.assertEqual(mask.sum(), int(np.floor(fraction * n + 0.5)))
    for label in np.unique(labels):
      n_label = np.sum(labels == label)
      self.assertLessEqual(abs(mask[labels == label].sum() -
                               fraction * n_label), 1.0)

  def test_depends_on_seed_and_client_only(self):
    labels = np.repeat(np.arange(5), 20)
    a = split.held_out_mask(labels, 0.25, seed=1, client_index=4)
    np.testing.assert_array_equal(
        a, split.held_out_mask(labels, 0.25, seed=1, client_index=4))
    self.assertFalse(np.array_equal(
        a, split.held_out_mask(labels, 0.25, seed=2, client_index=4)))
    self.assertFalse(np.array_equal(
        a, split.held_out_mask(labels, 0.25, seed=1, client_index=5)))


class SplitClientsTest(absltest.TestCase):

  def test_parts_are_disjoint_and_cover_each_client(self):
    data = _data([40, 13, 27, 60])
    held = split.split_clients(data, 0.25, seed=0)
    self.assertEqual(held.train.client_ids, data.client_ids)
    for i, cid in enumerate(data.client_ids):
      x, y = data.client_arrays(cid)
      tx, ty = held.train.client_arrays(cid)
      hx, hy = held.held_out(i)
      self.assertEqual(held.train.client_size(cid), len(ty))
      self.assertEqual(len(hy), int(np.floor(0.25 * len(y) + 0.5)))
      train_ids = set(np.round(tx[:, 0, 0, 0] * 10_000).astype(int))
      held_ids = set(np.round(hx[:, 0, 0, 0] * 10_000).astype(int))
      self.assertEmpty(train_ids & held_ids)
      self.assertEqual(train_ids | held_ids,
                       set(np.round(x[:, 0, 0, 0] * 10_000).astype(int)))
      # Labels travel with their images.
      self.assertCountEqual(np.concatenate([ty, hy]).tolist(), y.tolist())

  def test_client_too_small_for_the_fraction_is_a_data_error(self):
    data = _data([40, 1, 20])
    with self.assertRaisesRegex(federated_data.DataError,
                                r'client client_0001 has 1 examples.*no '
                                r'held-out'):
      split.split_clients(data, 0.25, seed=0)
    with self.assertRaisesRegex(federated_data.DataError, 'no train'):
      split.split_clients(_data([2, 2]), 0.9, seed=0)


class EvaluationClientsTest(absltest.TestCase):

  def test_sample_is_seeded_sorted_and_without_replacement(self):
    a = split.evaluation_clients(50, 12, seed=4)
    self.assertLen(a, 12)
    self.assertLen(set(a.tolist()), 12)
    np.testing.assert_array_equal(a, np.sort(a))
    np.testing.assert_array_equal(a, split.evaluation_clients(50, 12, 4))
    self.assertFalse(np.array_equal(a, split.evaluation_clients(50, 12, 5)))

  def test_zero_or_all_means_every_client(self):
    np.testing.assert_array_equal(split.evaluation_clients(7, 0, 1),
                                  np.arange(7))
    np.testing.assert_array_equal(split.evaluation_clients(7, 7, 1),
                                  np.arange(7))

  def test_finetune_seed_differs_by_round_and_client(self):
    seeds = {split.finetune_seed(0, r, c) for r in (1, 2) for c in (0, 1)}
    self.assertLen(seeds, 4)
    self.assertEqual(split.finetune_seed(3, 5, 9),
                     split.finetune_seed(3, 5, 9))


if __name__ == '__main__':
  absltest.main()

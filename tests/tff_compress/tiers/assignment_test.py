"""Tier assignment: exact shares, a function of the seed, fixed for the run."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tff_compress.tiers import assignment


class TierCountsTest(parameterized.TestCase):

  @parameterized.parameters(
      (50, (1, 1, 1), [17, 17, 16]),
      (20, (1, 1, 1), [7, 7, 6]),
      (10, (0.5, 0.25, 0.25), [5, 3, 2]),  # 2.5 / 2.5 remainders: earlier tier
      (7, (2, 1), [5, 2]),
      (3, (1, 1, 1, 1), [1, 1, 1, 0]),
  )
  def test_largest_remainder(self, n, shares, expected):
    counts = assignment.tier_counts(n, shares)
    self.assertEqual(counts, expected)
    self.assertEqual(sum(counts), n)
    total = sum(shares)
    for c, s in zip(counts, shares):
      self.assertLess(abs(c - n * s / total), 1)

  def test_refuses_non_positive_shares(self):
    with self.assertRaisesRegex(ValueError, 'positive'):
      assignment.tier_counts(10, (1, 0))
    with self.assertRaisesRegex(ValueError, 'positive'):
      assignment.tier_counts(10, ())


class AssignTiersTest(absltest.TestCase):

  def test_deterministic_in_the_seed(self):
    a = assignment.assign_tiers(50, (1, 1, 1), seed=3)
    b = assignment.assign_tiers(50, (1, 1, 1), seed=3)
    np.testing.assert_array_equal(a, b)
    self.assertEqual(a.dtype, np.int32)
    others = [assignment.assign_tiers(50, (1, 1, 1), seed=s)
              for s in range(4, 8)]
    self.assertTrue(all((o != a).any() for o in others))

  def test_holds_the_exact_shares(self):
    tiers = assignment.assign_tiers(50, (2, 1, 1), seed=0)
    np.testing.assert_array_equal(np.bincount(tiers, minlength=3),
                                  assignment.tier_counts(50, (2, 1, 1)))

  def test_not_ordered_by_client_index(self):
    """A tier is not a block of consecutive clients (whose data would be
    correlated under shard partitions)."""
    tiers = assignment.assign_tiers(60, (1, 1, 1), seed=0)
    self.assertFalse(np.all(np.diff(tiers) >= 0))
    # Every tier has clients in both halves of the index range.
    for t in range(3):
      where = np.flatnonzero(tiers == t)
      self.assertLess(where.min(), 30)
      self.assertGreaterEqual(where.max(), 30)

  def test_uniform_over_seeds(self):
    """Over seeds, each client lands in each tier in proportion to its share
    (a seeded uniform permutation)."""
    seeds = 400
    hits = np.zeros((12, 2))
    for seed in range(seeds):
      tiers = assignment.assign_tiers(12, (3, 1), seed)
      hits[np.arange(12), tiers] += 1
    expected = seeds * 0.25
    # Binomial(400, 1/4): sd = 8.7; 5 sd.
    np.testing.assert_array_less(np.abs(hits[:, 1] - expected), 5 * 8.7)


if __name__ == '__main__':
  absltest.main()

"""The schedule over rounds is tfmot's, cut into phases; mask deliveries."""

from absl.testing import absltest
import numpy as np
import tensorflow_model_optimization as tfmot

from tests.tff_compress import run_utils
from tff_compress.pruning import schedule as schedule_lib


def _schedule(**overrides):
  cfg = run_utils.config_file('caldas_mnist.py', **{
      'rounds': 20, 'pruning.target': 0.8, **overrides})
  return schedule_lib.Schedule.from_settings(run_utils.settings(cfg).pruning)


class ScheduleTest(absltest.TestCase):

  def test_phases_follow_tfmot_polynomial_decay(self):
    s = _schedule(**{'pruning.begin_round': 2, 'pruning.end_round': 14,
                     'pruning.frequency': 4, 'pruning.power': 3.0})
    rule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, 0.8, begin_step=2, end_step=14, power=3, frequency=4)
    # tfmot prunes at 2 (0 %, no new phase), 6, 10 and 14.
    self.assertEqual([p.start for p in s.phases], [1, 6, 10, 14])
    for p in s.phases[1:]:
      prune, sparsity = rule(p.start)
      self.assertTrue(bool(prune))
      self.assertEqual(p.sparsity, float(np.float32(sparsity)))
    # s = 0.8 (1 - (1 - t)^3) at t = 1/3, 2/3, 1.
    np.testing.assert_allclose([p.sparsity for p in s.phases],
                               [0.0, 0.8 * 19 / 27, 0.8 * 26 / 27, 0.8],
                               rtol=1e-6)
    self.assertEqual(s.final_sparsity, np.float32(0.8))

  def test_begin_equal_end_is_one_step(self):
    s = _schedule(**{'pruning.begin_round': 5, 'pruning.end_round': 5})
    self.assertEqual([(p.start, p.sparsity) for p in s.phases],
                     [(1, 0.0), (5, float(np.float32(0.8)))])

  def test_a_step_at_round_one_prunes_from_the_start(self):
    s = _schedule(**{'pruning.begin_round': 1, 'pruning.end_round': 1})
    self.assertEqual(s.phases, (schedule_lib.Phase(1, float(np.float32(0.8))),))
    self.assertEqual(s.mask_recipients(1, [3, 4], lambda r: []), 2)

  def test_round_to_phase(self):
    s = schedule_lib.Schedule((schedule_lib.Phase(1, 0.0),
                               schedule_lib.Phase(4, 0.3),
                               schedule_lib.Phase(7, 0.5)))
    self.assertEqual([s.index(r) for r in range(1, 10)],
                     [0, 0, 0, 1, 1, 1, 2, 2, 2])
    self.assertEqual(s.phase(100).sparsity, 0.5)
    with self.assertRaises(ValueError):
      s.index(0)
    with self.assertRaises(ValueError):  # must start at round 1
      schedule_lib.Schedule((schedule_lib.Phase(2, 0.0),))
    with self.assertRaises(ValueError):
      schedule_lib.Schedule((schedule_lib.Phase(1, 0.0),
                             schedule_lib.Phase(4, 0.3),
                             schedule_lib.Phase(4, 0.5)))

  def test_mask_goes_to_clients_without_the_current_one(self):
    s = schedule_lib.Schedule((schedule_lib.Phase(1, 0.0),
                               schedule_lib.Phase(3, 0.5),
                               schedule_lib.Phase(6, 0.7)))
    sampled = {1: [0, 1], 2: [1, 2], 3: [2, 3], 4: [3, 4], 5: [0, 4],
               6: [0, 1], 7: [1, 5]}.__getitem__
    # Phase 0 is dense: nobody needs a mask.
    self.assertEqual(s.mask_recipients(2, [1, 2], sampled), 0)
    # Round 3 starts a mask: everyone picked needs it, whatever their past.
    self.assertEqual(s.mask_recipients(3, [2, 3], sampled), 2)
    # Round 4: client 3 got it in round 3, client 4 did not.
    self.assertEqual(s.mask_recipients(4, [3, 4], sampled), 1)
    # Round 5: client 4 got it in round 4, client 0 last saw round 1.
    self.assertEqual(s.mask_recipients(5, [0, 4], sampled), 1)
    # Round 6 changes the mask again; round 7: client 1 has the new one.
    self.assertEqual(s.mask_recipients(6, [0, 1], sampled), 2)
    self.assertEqual(s.mask_recipients(7, [1, 5], sampled), 1)

  def test_describe(self):
    s = _schedule(**{'pruning.begin_round': 1, 'pruning.end_round': 3,
                     'pruning.frequency': 1})
    self.assertIn('mask updates at rounds 2, 3', s.describe())
    self.assertIn('80.0 %', s.describe())


if __name__ == '__main__':
  absltest.main()

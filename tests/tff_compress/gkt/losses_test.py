"""The distillation and cross-entropy losses against hand computations."""

import math

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.gkt import losses


class KdLossTest(absltest.TestCase):

  def test_two_classes_by_hand(self):
    # Teacher uniform, student logits (ln 3, 0): q = (3/4, 1/4), p = (1/2,
    # 1/2); KL(p||q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
    s = tf.constant([[math.log(3.0), 0.0]])
    t = tf.constant([[0.0, 0.0]])
    self.assertAlmostEqual(float(losses.kd_loss(s, t, 1.0)),
                           0.5 * math.log(4.0 / 3.0), places=6)
    # T = 2: q = softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (sqrt 3 + 1) and the
    # T^2 = 4 factor.
    q1 = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)
    by_hand = 4.0 * (0.5 * math.log(0.5 / q1) + 0.5 * math.log(0.5 / (1 - q1)))
    self.assertAlmostEqual(float(losses.kd_loss(s, t, 2.0)), by_hand, places=6)

  def test_batch_mean_matches_per_row_formula(self):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 4)).astype(np.float32)
    t = 3 * rng.normal(size=(5, 4)).astype(np.float32)
    temperature = 3.0

    def softmax(z):
      e = np.exp(z - z.max(1, keepdims=True))
      return e / e.sum(1, keepdims=True)

    p = softmax(t.astype(np.float64) / temperature)
    q = softmax(s.astype(np.float64) / temperature)
    rows = temperature**2 * (p * np.log(p / q)).sum(1)
    np.testing.assert_allclose(losses.kl_per_sample(s, t, temperature), rows,
                               rtol=1e-5, atol=2e-6)
    self.assertAlmostEqual(float(losses.kd_loss(s, t, temperature)),
                           rows.mean(), places=5)
    mask = np.array([1, 0, 1, 0, 0], np.float32)
    self.assertAlmostEqual(float(losses.kd_loss(s, t, temperature, mask)),
                           (rows[0] + rows[2]) / 2, places=5)
    # No teacher anywhere (a client's first round): no distillation term.
    self.assertEqual(float(losses.kd_loss(s, t, temperature, 0 * mask)), 0.0)

  def test_zero_when_equal_and_teacher_gets_no_gradient(self):
    s = tf.Variable([[0.3, -1.0, 2.0]])
    t = tf.Variable([[0.3, -1.0, 2.0]])
    with tf.GradientTape() as tape:
      loss = losses.kd_loss(s, t, 3.0)
    self.assertAlmostEqual(float(loss), 0.0, places=6)
    grad_s, grad_t = tape.gradient(loss, [s, t])
    np.testing.assert_allclose(grad_s, 0.0, atol=1e-6)
    self.assertIsNone(grad_t)

  def test_cross_entropy(self):
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
    self.assertAlmostEqual(float(losses.ce_per_sample([0], logits)[0]),
                           expected, places=6)


if __name__ == '__main__':
  absltest.main()

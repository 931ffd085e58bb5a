"""Local training: sample-keyed teacher logits under shuffling, epochs."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.gkt import training


def _softmax(z, t):
  e = np.exp((z - z.max(1, keepdims=True)) / t)
  return e / e.sum(1, keepdims=True)


def _lookup_model(n, k):
  """A student whose logits for sample i are a free row i (one-hot input)."""
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(n,)),
      tf.keras.layers.Dense(k, use_bias=False,
                            kernel_initializer='zeros'),
  ])


class EpochOrdersTest(absltest.TestCase):

  def test_each_epoch_is_a_fresh_seeded_permutation(self):
    orders = training.epoch_orders(tf.constant(50), 3, tf.constant([4, 2],
                                                                    tf.int64))
    orders = orders.numpy()
    for row in orders:
      self.assertEqual(sorted(row.tolist()), list(range(50)))
    self.assertFalse((orders[0] == orders[1]).all())
    again = training.epoch_orders(tf.constant(50), 3,
                                  tf.constant([4, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(orders, again)


class TrainTest(absltest.TestCase):

  def test_teacher_logits_follow_their_sample_through_shuffled_epochs(self):
    # Each sample i has its own teacher row; the student can represent any
    # logits per sample. Trained with shuffled batches of 3 (batches mix
    # samples differently every epoch) and a KD weight that dominates CE,
    # every row must converge to *its own* teacher's distribution. Keying by
    # batch position (FedML) would pull row i toward other samples' rows.
    n, k, temperature = 10, 4, 2.0
    rng = np.random.default_rng(1)
    teacher = (3.0 * rng.normal(size=(n, k))).astype(np.float32)
    y = teacher.argmax(1).astype(np.int32)
    x = np.eye(n, dtype=np.float32)
    model = _lookup_model(n, k)
    optimizer = training.OPTIMIZERS['adam'](0.1)
    state = optimizer.initialize(
        [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables])
    spec = training.TrainSpec(epochs=60, batch_size=3, kd_weight=50.0,
                              temperature=temperature)
    _, metrics = training.train(
        model, optimizer, state, x, y, teacher, np.ones(n, np.float32), spec,
        tf.constant([7, 1], tf.int64))
    self.assertEqual(float(metrics['count']), 60 * n)
    student = model(x).numpy()
    np.testing.assert_allclose(_softmax(student, temperature),
                               _softmax(teacher, temperature), atol=0.03)
    # And every sample is far from the other samples' teachers.
    for i in range(n):
      for j in range(n):
        if i != j and np.abs(_softmax(teacher, temperature)[i] -
                             _softmax(teacher, temperature)[j]).max() > 0.2:
          self.assertGreater(
              np.abs(_softmax(student, temperature)[i] -
                     _softmax(teacher, temperature)[j]).max(), 0.1)

  def test_masked_samples_get_cross_entropy_only(self):
    n, k = 6, 3
    teacher = np.tile(np.array([[5.0, 0.0, 0.0]], np.float32), (n, 1))
    y = np.full(n, 2, np.int32)
    x = np.eye(n, dtype=np.float32)
    model = _lookup_model(n, k)
    optimizer = training.OPTIMIZERS['adam'](0.1)
    state = optimizer.initialize(
        [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables])
    mask = np.array([1, 1, 1, 0, 0, 0], np.float32)
    spec = training.TrainSpec(epochs=40, batch_size=2, kd_weight=20.0,
                              temperature=1.0)
    _, metrics = training.train(model, optimizer, state, x, y, teacher, mask,
                                spec, tf.constant([0, 0], tf.int64))
    pred = model(x).numpy().argmax(1)
    # With a teacher: the (heavily weighted) teacher's class 0 wins; without:
    # the label, class 2.
    np.testing.assert_array_equal(pred, [0, 0, 0, 2, 2, 2])
    # kd_sum only counts samples with a teacher; ce_sum all of them.
    self.assertGreater(float(metrics['ce_sum']), 0.0)
    self.assertAlmostEqual(
        float(metrics['loss_sum']),
        float(metrics['ce_sum']) + 20.0 * float(metrics['kd_sum']), places=2)

  def test_weight_decay_is_l2_gradient(self):
    # One SGD step with zero data gradient: w <- w - lr * wd * w.
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(2,)),
        tf.keras.layers.Dense(2, use_bias=False, kernel_initializer='ones'),
    ])
    optimizer = training.OPTIMIZERS['sgd'](0.5)
    state = optimizer.initialize(
        [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables])
    spec = training.TrainSpec(epochs=1, batch_size=1, weight_decay=0.1)
    x = np.zeros((1, 2), np.float32)  # logits 0: CE gradient w.r.t. w is 0
    training.train(model, optimizer, state, x, np.zeros(1, np.int32),
                   np.zeros((1, 2), np.float32), np.zeros(1, np.float32),
                   spec, tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(model.get_weights()[0], 1.0 - 0.5 * 0.1,
                               rtol=1e-6)


class PredictTest(absltest.TestCase):

  def test_row_order_and_all_outputs(self):
    inputs = tf.keras.Input((3,))
    a = tf.keras.layers.Dense(2, name='a')(inputs)
    b = tf.keras.layers.Dense(4, name='b')(inputs)
    model = tf.keras.Model(inputs, [a, b])
    x = np.random.default_rng(0).normal(size=(11, 3)).astype(np.float32)
    out_a, out_b = training.predict(model, x, 4)
    want_a, want_b = model(x)
    np.testing.assert_allclose(out_a, want_a, rtol=1e-6)
    np.testing.assert_allclose(out_b, want_b, rtol=1e-6)


if __name__ == '__main__':
  absltest.main()

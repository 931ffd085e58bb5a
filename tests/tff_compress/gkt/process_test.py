"""FedGKT's round and evaluation through the TFF C++ runtime."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.encoders import rotation
from tff_compress.runtime import local as local_runtime
from tff_compress.gkt import codec
from tff_compress.gkt import process
from tff_compress.gkt import training

_SHAPE = (8, 8, 3)
_K = 3
_SIZES = (5, 7, 3, 6)
_PICKED = (0, 2, 3)


def _settings(bits):
  return process.GktSpec(
      input_shape=_SHAPE, num_classes=_K, depth=11, edge_blocks=1,
      client=training.TrainSpec(epochs=2, batch_size=4, kd_weight=1.0,
                                temperature=3.0, weight_decay=1e-4),
      server=training.TrainSpec(epochs=2, batch_size=8, kd_weight=1.0,
                                temperature=3.0, weight_decay=1e-4),
      client_optimizer='adam', client_learning_rate=1e-3,
      server_optimizer='sgdm', server_learning_rate=1e-2,
      bits=bits, num_clients=len(_SIZES), seed=0)


def _data():
  rng = np.random.default_rng(0)
  return [(rng.random((n, *_SHAPE), dtype=np.float32),
           rng.integers(0, _K, n).astype(np.int32)) for n in _SIZES]


def _inputs(data, states, round_num):
  return [collections.OrderedDict(
      key=np.int32(c), seed=np.array([round_num, c], np.int64),
      x=data[c][0], y=data[c][1], state=states[c]) for c in _PICKED]


class FeatureCodecTest(absltest.TestCase):

  def test_per_sample_quantization_error_and_bytes(self):
    features = np.random.default_rng(0).gamma(
        1.0, size=(4, 5, 5, 16)).astype(np.float32)
    seed = tf.constant([3, 4], tf.int64)
    for bits in (8, 4):
      fc = codec.FeatureCodec((5, 5, 16), bits)
      message = fc.encode(features, seed)
      decoded = fc.decode(message).numpy()
      step = (features.max((1, 2, 3)) - features.min((1, 2, 3))) / (2**bits - 1)
      err = np.abs(decoded - features).max((1, 2, 3))
      self.assertTrue((err <= step * 1.0001).all(), (bits, err, step))
      per_sample = 5 * 5 * 16 * bits // 8 + 8  # codes + float32 min, max
      self.assertEqual(fc.encoded_bytes_per_sample(), per_sample)
      self.assertEqual(int(tf.add_n([
          tf.size(t, tf.int64) * t.dtype.size
          for t in tf.nest.flatten(message)])), 4 * per_sample + 16)
      # Deterministic per seed (a resumed run re-encodes identically).
      np.testing.assert_array_equal(fc.decode(fc.encode(features, seed)),
                                    decoded)
    identity = codec.FeatureCodec((5, 5, 16), 32)
    self.assertIs(identity.encode(features, seed), features)

  def test_eden_features_are_unbiased_and_beat_uniform_at_equal_bits(self):
    # Feature maps after a ReLU: non-negative, skewed (gamma), unequal
    # per-channel scales -- what the edge model uploads.
    rng = np.random.default_rng(1)
    shape = (7, 7, 16)
    features = (rng.gamma(0.5, size=(2, *shape)) *
                rng.uniform(0.1, 3.0, size=shape[-1])).astype(np.float32)
    seeds = 100
    errors = {}
    for quantizer in ('uniform', 'eden'):
      fc = codec.FeatureCodec(shape, 2, quantizer)
      round_trip = tf.function(lambda s, fc=fc: fc.decode(fc.encode(
          features, s)))
      decoded = np.stack([round_trip(tf.constant([s, 9], tf.int64)).numpy()
                          for s in range(seeds)])
      sq = ((decoded - features) ** 2).sum((2, 3, 4))  # [seeds, samples]
      errors[quantizer] = (sq / (features ** 2).sum((1, 2, 3))).mean()
      # Unbiased: the mean over seeds is within the noise of the truth.
      bias = np.linalg.norm((decoded.mean(0) - features).reshape(2, -1),
                            axis=1)
      floor = np.sqrt(sq.mean(0) / seeds)
      self.assertTrue((bias < 1.5 * floor).all(), (quantizer, bias, floor))
    # EDEN at 2 bits: D_2 / (1 - D_2) = 0.133 after a near-Haar rotation;
    # the uniform grid between min and max wastes levels on skewed maps.
    self.assertLess(errors['eden'], 0.16)
    self.assertLess(errors['eden'], errors['uniform'] / 3, errors)
    # Bytes: 2 bits per rotated coordinate (784 floats in a 25 x 32
    # layout) and one float32 scale per sample.
    c, w = rotation.geometry(int(np.prod(shape)))
    self.assertEqual(
        codec.FeatureCodec(shape, 2, 'eden').encoded_bytes_per_sample(),
        c * w * 2 // 8 + 4)

  def test_eden_takes_1_to_8_bits(self):
    with self.assertRaisesRegex(codec.factory.CodecError, r'gkt\.bits=16'):
      codec.FeatureCodec((2, 2, 16), 16, 'eden')

  def test_bad_bits_name_the_key(self):
    with self.assertRaisesRegex(codec.factory.CodecError, r'gkt\.bits=12'):
      codec.FeatureCodec((2, 2, 16), 12)


class RoundTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.settings = _settings(bits=8)
    cls.process = process.build_gkt_process(cls.settings)

  def test_one_round_bytes_alignment_and_state(self):
    p, s = self.process, self.settings
    data = _data()
    with local_runtime.local_context():
      server = p.initialize_server()
      edge = p.initialize_client()
      states = [process.initial_client_state(edge, n, _K) for n in _SIZES]
      inputs = _inputs(data, states, 1)
      new_server, new_states, m = p.next(
          server, np.array([0, 1], np.int64), inputs)
      n_total = sum(_SIZES[c] for c in _PICKED)
      # Local epochs on clients and on the server, every sample.
      self.assertEqual(m['edge']['count'], 2 * n_total)
      self.assertEqual(m['server']['count'], 2 * n_total)
      self.assertEqual(m['edge']['kd_sum'], 0.0)  # no server logits yet
      # Uplink: 8-bit features (codes + min/max per sample, one seed per
      # client) + float32 logits + int32 labels + int32 client key.
      per_sample = 8 * 8 * 16 + 8
      up = m['bytes_up']
      self.assertEqual(up['features'], n_total * per_sample + 3 * 16)
      self.assertEqual(up['logits'], n_total * _K * 4)
      self.assertEqual(up['labels'], n_total * 4)
      self.assertEqual(up['total'], up['features'] + up['logits'] +
                       up['labels'] + 3 * 4)
      # Downlink: each client's own server logits, float32.
      self.assertEqual(m['bytes_down'], n_total * _K * 4)

      # Every client received the server model's logits of *its* samples,
      # in sample-id order: recompute them eagerly from the returned edge and
      # server weights and the same (seeded) feature codec.
      server_model = s.server_model()
      training.assign_weights(server_model, new_server['weights'])
      fc = codec.FeatureCodec(s.feature_shape, s.bits)
      for c, inp, st in zip(_PICKED, inputs, new_states):
        self.assertEqual(st['teacher'].shape, (_SIZES[c], _K))
        np.testing.assert_array_equal(st['teacher_mask'], 1.0)
        edge_model = s.edge_model()
        training.assign_weights(edge_model, st['weights'])
        _, features = edge_model(data[c][0], training=False)
        decoded = fc.decode(fc.encode(
            features, tf.random.experimental.stateless_fold_in(
                inp['seed'], 1)))
        want = server_model(decoded, training=False)
        np.testing.assert_allclose(st['teacher'], want, rtol=1e-4, atol=1e-4)
      # The edge weights moved; batch-norm statistics too.
      self.assertFalse(np.allclose(new_states[0]['weights']['trainable'][0],
                                   edge['weights']['trainable'][0]))
      self.assertFalse(np.allclose(
          new_states[0]['weights']['non_trainable'][0],
          edge['weights']['non_trainable'][0]))

      # Round 2 distills from the stored server logits.
      for c, st in zip(_PICKED, new_states):
        states[c] = st
      _, _, m2 = p.next(new_server, np.array([0, 2], np.int64),
                        _inputs(data, states, 2))
      self.assertGreater(m2['edge']['kd_sum'], 0.0)

      # Evaluation: shards featurized by a client's edge model, the server
      # model predicts; counts cover every test example.
      eval_inputs = [collections.OrderedDict(
          key=np.int32(j), seed=np.array([9, j], np.int64),
          x=data[j][0], y=data[j][1], weights=states[j]['weights'])
                     for j in (1, 2)]
      e = p.evaluate(new_server['weights'], eval_inputs)
      self.assertEqual(e['server']['count'], _SIZES[1] + _SIZES[2])
      self.assertEqual(e['edge']['count'], _SIZES[1] + _SIZES[2])
      self.assertBetween(e['server']['correct'], 0, _SIZES[1] + _SIZES[2])


if __name__ == '__main__':
  absltest.main()

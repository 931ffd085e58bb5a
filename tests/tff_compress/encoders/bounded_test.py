"""The decoded-norm bound of bounded_encode, per stage and per codec."""

import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import factory as codec_factory
from tff_compress.encoders import stages
from tff_compress.encoders import bounded
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure

# A model-update-like structure: one large tensor (compressed), one just
# over min_size, and a small bias (always raw float32). Keys in sorted order:
# StructureCodec pairs tf.nest order with the type's order.
SHAPES = collections.OrderedDict(a_kernel=[300, 20], b_kernel=[1100],
                                 c_bias=[20])
VALUE_TYPE = tff.StructWithPythonType(
    [(k, tff.TensorType(np.float32, s)) for k, s in SHAPES.items()],
    collections.OrderedDict)

# Every stage and every position of the quantizer in a chain, both raw
# float32 paths (bits=32 chain, identity codec).
CODECS = [('none', 1.0, 1), ('none', 0.5, 8), ('hadamard', 1.0, 1),
          ('hadamard', 0.5, 2), ('kashin', 1.0, 2), ('kashin', 0.5, 1),
          ('hadamard', 1.0, 32), ('none', 0.5, 32), ('none', 1.0, 32)]

def _value(seed, scale, heavy_tail=False):
  rng = np.random.default_rng(seed)
  draw = rng.standard_t if heavy_tail else None
  out = collections.OrderedDict()
  for name, shape in SHAPES.items():
    x = draw(2, shape) if heavy_tail else rng.normal(size=shape)
    out[name] = tf.constant(scale * x, tf.float32)
  return out


def _decoded_norm(coder, message, seed):
  return float(bounded.global_l2_norm(coder.decode(message, seed)))


class BoundTest(parameterized.TestCase):

  @parameterized.parameters(*CODECS)
  def test_decoded_norm_at_most_clip(self, transform, sub, bits):
    codec = codec_settings.UplinkCodec(transform, bits, sub, min_size=1000)
    coder = structure.StructureCodec(VALUE_TYPE, codec)
    encode = tf.function(
        lambda v, s, c: bounded.bounded_encode_with_info(coder, v, s, c))
    clip = 0.7
    scales = []
    for i, (scale, tail) in enumerate(
        [(1e-4, False), (3e-3, False), (0.1, False), (10.0, True)] * 2):
      seed = tf.constant([i, 17], tf.int64)
      out = encode(_value(i, scale, tail), seed, clip)
      # Decoded independently of the encoder's own check (another graph).
      norm = _decoded_norm(coder, out.message, seed)
      self.assertLessEqual(norm, clip, (scale, i))
      scales.append(float(out.scale))
      self.assertEqual(float(out.zeroed), 0.0)
    if codec.is_identity:  # float32: at most a rounding-level shrink
      self.assertGreater(min(scales), 1 - 1e-5)
    # Some inputs must have needed a rescale for 1-bit codes.
    if bits == 1:
      self.assertLess(min(scales), 1.0)
    self.assertTrue(all(0.0 < s <= 1.0 for s in scales), scales)

  def test_rescale_never_falls_back_to_zero(self):
    # Regression: a rescale aimed exactly at the target could land 1e-7
    # above it, and the next factor (1 - 2e-7) left float32 side scalars
    # unchanged, ending in the all-zero fallback (seen on 1 of 50 real
    # client updates at 2 bits).
    coder = structure.StructureCodec(
        VALUE_TYPE, codec_settings.UplinkCodec('hadamard', 2, 1.0))
    encode = tf.function(
        lambda v, s: bounded.bounded_encode_with_info(coder, v, s, 0.4))
    for i in range(60):
      seed = tf.constant([i, 3], tf.int64)
      out = encode(_value(100 + i, 0.01), seed)
      self.assertGreater(float(out.scale), 0.1, i)
      self.assertLessEqual(_decoded_norm(coder, out.message, seed), 0.4)

  def test_small_update_untouched_when_decode_fits(self):
    coder = structure.StructureCodec(
        VALUE_TYPE, codec_settings.UplinkCodec('hadamard', 8, 1.0))
    seed = tf.constant([3, 4], tf.int64)
    value = _value(0, 1e-4)
    out = bounded.bounded_encode_with_info(coder, value, seed, 10.0)
    self.assertEqual(float(out.scale), 1.0)
    plain = coder.encode(value, seed)
    for a, b in zip(tf.nest.flatten(out.message), tf.nest.flatten(plain)):
      np.testing.assert_array_equal(a, b)

  @parameterized.parameters(np.nan, np.inf, -np.inf)
  def test_non_finite_update_is_zeroed(self, bad):
    coder = structure.StructureCodec(
        VALUE_TYPE, codec_settings.UplinkCodec('kashin', 2, 0.5))
    value = _value(1, 0.1)
    value['b_kernel'] = tf.tensor_scatter_nd_update(value['b_kernel'], [[7]],
                                                   [bad])
    seed = tf.constant([5, 6], tf.int64)
    out = bounded.bounded_encode_with_info(coder, value, seed, 1.0)
    self.assertEqual(float(out.zeroed), 1.0)
    decoded = coder.decode(out.message, seed)
    for t in tf.nest.flatten(decoded):
      np.testing.assert_array_equal(t, np.zeros_like(t))

  def test_rejects_unverified_stage(self):

    class Squash(stages.Stage):
      name = 'squash'

    coder = structure.StructureCodec(
        VALUE_TYPE, codec_settings.UplinkCodec('hadamard', 4, 1.0))
    coder._chains[0].stages.append(Squash())  # pylint: disable=protected-access
    with self.assertRaisesRegex(TypeError, 'squash'):
      bounded.bounded_encode(coder, _value(0, 1.0), tf.constant([1, 2],
                                                                tf.int64), 1.0)


class HomogeneityTest(parameterized.TestCase):
  """decode(s · float entries) = s · decode, checked for each stage."""

  @parameterized.parameters(
      ('hadamard', stages.HadamardStage()),
      ('kashin', stages.KashinStage(frame_ratio=1.5)),
      ('subsample', stages.SubsampleStage(0.3)),
      ('quantize1', stages.QuantizeStage(1)),
      ('quantize4', stages.QuantizeStage(4)),
      ('quantize16', stages.QuantizeStage(16)))
  def test_stage_decode_scales_with_float_entries(self, unused_name, stage):
    self.assertIsInstance(stage, bounded.HOMOGENEOUS_STAGES)
    n = 2000
    x = tf.constant(np.random.default_rng(2).normal(size=n), tf.float32)
    seed = tf.constant([9, 9], tf.int64)
    enc = stage.encode(x, seed)
    for s in (0.5, 0.013, 3.0):
      scaled = bounded.scale_message(enc, s)
      np.testing.assert_allclose(
          stage.decode(scaled, n, seed), s * stage.decode(enc, n, seed),
          rtol=2e-5, atol=2e-6 * s * float(tf.reduce_max(tf.abs(x))))

  def test_bitpack_has_no_float_entries(self):
    stage = stages.BitpackStage(3)
    enc = stage.encode(tf.constant([1, 5, 7, 0, 2], tf.int32), None)
    self.assertFalse(any(t.dtype.is_floating for t in enc.values()))
    for bits in (1, 2, 8, 16):
      chain = codec_factory.build_chain('hadamard', 0.5, bits, 'uplink')
      self.assertTrue(all(isinstance(s, bounded.HOMOGENEOUS_STAGES)
                          for s in chain.stages))


if __name__ == '__main__':
  absltest.main()

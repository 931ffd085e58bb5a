"""The wire-format parser rejects every malformed blob with PayloadError."""

import struct
import zlib

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import factory

_N = 300


def _valid(chain, seed=0):
  x = tf.random.stateless_normal([_N], [seed, 1])
  enc = chain.encode(x, tf.constant([seed, 2], tf.int64))
  return {k: v.numpy() for k, v in enc.items()}


class PayloadFuzzTest(parameterized.TestCase):

  @parameterized.parameters(
      ('none', 1.0, 32), ('hadamard', 1.0, 2), ('kashin', 0.5, 3),
      ('none', 0.5, 16), ('rotation', 1.0, 2, 'eden'),
      ('rotation', 0.5, 2.5, 'eden', 'mse'), ('rotation', 1.0, 4))
  def test_fuzzed_blobs_raise_payload_error_only(self, transform, sub, bits,
                                                 quantizer='uniform',
                                                 scale='unbiased'):
    chain = factory.build_chain(transform, sub, bits, 'uplink',
                                quantizer=quantizer, scale=scale)
    enc = _valid(chain)
    blob = chain.to_bytes(enc, _N)
    back = chain.from_bytes(blob, _N)
    for key in enc:  # a valid blob round-trips exactly
      np.testing.assert_array_equal(back[key], enc[key])
    rng = np.random.default_rng(0)
    rejected = 0
    trials = 1500
    spec = chain.spec(_N)
    for i in range(trials):
      kind = i % 6
      b = bytearray(blob)
      if kind == 0:    # truncated
        b = b[:rng.integers(0, len(b))]
      elif kind == 1:  # extended
        b += rng.bytes(int(rng.integers(1, 64)))
      elif kind == 2:  # bit flips
        for _ in range(int(rng.integers(1, 8))):
          pos = int(rng.integers(0, len(b)))
          b[pos] ^= 1 << int(rng.integers(0, 8))
      elif kind == 3:  # garbage of plausible length
        b = bytearray(rng.bytes(int(rng.integers(0, 2 * len(blob)))))
      else:            # valid body, forged checksum over corrupted header
        b = bytearray(rng.bytes(8)) + b[8:]
      if kind == 5:
        # Mutate the header/body and re-sign it so the structural checks,
        # not the checksum, must catch it.
        body = bytearray(blob[:-4])
        mutation = int(rng.integers(0, 3))
        if mutation == 0:
          body = body[:int(rng.integers(0, len(body)))]
        elif mutation == 1:
          pos = int(rng.integers(0, min(len(body), 64)))
          body[pos] = int(rng.integers(0, 256))
        else:
          body += rng.bytes(int(rng.integers(1, 16)))
        b = body + struct.pack('<I', zlib.crc32(bytes(body)))
        try:
          out = chain.from_bytes(bytes(b), _N)
        except chain_lib.PayloadError:
          continue
        # A mutation that survives must still be a well-formed payload.
        self.assertEqual(list(out), list(spec))
        for key, (dtype, count) in spec.items():
          self.assertEqual((out[key].dtype, out[key].size), (dtype, count))
        continue
      try:
        chain.from_bytes(bytes(b), _N)
      except chain_lib.PayloadError:
        rejected += 1
      # Any other exception type propagates and fails the test.
    self.assertEqual(rejected, trials - trials // 6)

  def test_wrong_length_and_type_and_nonfinite(self):
    chain = factory.build_chain('none', 1.0, 4, 'uplink')
    enc = _valid(chain)
    blob = chain.to_bytes(enc, _N)
    with self.assertRaisesRegex(chain_lib.PayloadError, 'expected 301'):
      chain.from_bytes(blob, _N + 1)
    with self.assertRaisesRegex(chain_lib.PayloadError, 'must be bytes'):
      chain.from_bytes('text', _N)
    bad = dict(enc)
    bad['quantize/min'] = np.array([np.nan], np.float32)
    with self.assertRaisesRegex(chain_lib.PayloadError, 'not finite'):
      chain.from_bytes(chain.to_bytes(bad, _N), _N)
    bad = dict(enc)
    bad['quantize/min'], bad['quantize/max'] = enc['quantize/max'], enc[
        'quantize/min']
    with self.assertRaisesRegex(chain_lib.PayloadError, 'min > '):
      chain.from_bytes(chain.to_bytes(bad, _N), _N)
    with self.assertRaisesRegex(chain_lib.PayloadError, 'elements'):
      chain.to_bytes(dict(enc, values=enc['values'][:-1]), _N)

  def test_eden_scale_must_be_finite_and_non_negative(self):
    chain = factory.build_chain('rotation', 1.0, 1.5, 'uplink',
                                quantizer='eden')
    enc = _valid(chain)
    self.assertEqual(enc['eden/scale'].shape, (2,))  # one per rate segment
    for bad, message in ((-1.0, 'negative'), (np.inf, 'not finite')):
      forged = dict(enc, **{'eden/scale': np.array([1.0, bad], np.float32)})
      with self.assertRaisesRegex(chain_lib.PayloadError, message):
        chain.from_bytes(chain.to_bytes(forged, _N), _N)


class FactoryTest(parameterized.TestCase):

  @parameterized.parameters(
      (dict(transform='fft'), 'broadcast.transform'),
      (dict(bits=0), 'broadcast.bits'),
      (dict(bits=12), 'broadcast.bits'),
      (dict(bits=True), 'broadcast.bits'),
      (dict(bits=2.5), 'broadcast.bits'),  # fractional: EDEN only
      (dict(bits=16, quantizer='eden'), 'broadcast.bits'),
      (dict(bits=0.5, quantizer='eden'), 'broadcast.bits'),
      (dict(bits=8.5, quantizer='eden'), 'broadcast.bits'),
      (dict(subsample=0.0), 'broadcast.subsample'),
      (dict(subsample=1.5), 'broadcast.subsample'),
      (dict(subsample=True), 'broadcast.subsample'),
      (dict(quantizer='lloyd'), 'broadcast.quantizer'),
      (dict(scale='min'), 'broadcast.scale'),
      (dict(scale='mse'), "broadcast.scale='mse' needs"),
  )
  def test_invalid_settings_name_the_key(self, override, key):
    args = dict(transform='hadamard', subsample=1.0, bits=8)
    args.update(override)
    with self.assertRaisesRegex(factory.CodecError, key):
      factory.build_chain(config_prefix='broadcast', **args)

  def test_errors_list_the_allowed_values(self):
    with self.assertRaisesRegex(factory.CodecError,
                                'none, hadamard, kashin, rotation'):
      factory.build_chain('fft', 1.0, 8, 'uplink')
    with self.assertRaisesRegex(factory.CodecError, 'uniform, eden'):
      factory.build_chain('none', 1.0, 8, 'uplink', quantizer='x')
    with self.assertRaisesRegex(factory.CodecError, r'fractional rate in \(1, 8\)'):
      factory.build_chain('none', 1.0, 9, 'uplink', quantizer='eden')

  def test_chain_order_follows_caldas(self):
    chain = factory.build_chain('kashin', 0.25, 2, 'uplink')
    self.assertEqual([s.name for s in chain.stages],
                     ['kashin', 'subsample', 'quantize', 'bitpack'])
    self.assertEqual(factory.build_chain('none', 1.0, 32, 'x').stages, [])
    # The rotation subsamples itself (no separate subsample stage).
    chain = factory.build_chain('rotation', 0.25, 1.5, 'uplink',
                                quantizer='eden')
    self.assertEqual([s.name for s in chain.stages],
                     ['rotation', 'eden', 'bitpack'])
    self.assertEqual(chain.stages[0].keep, 0.25)
    self.assertEqual(factory.build_chain('rotation', 1.0, 32, 'x',
                                         quantizer='eden').stages[0].name,
                     'rotation')


if __name__ == '__main__':
  absltest.main()

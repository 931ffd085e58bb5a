"""The new codec chains convert to TFLite builtins and agree with TensorFlow.

A phone runs the same encode/decode graphs (mobile_export), so every chain
with a new stage (whole-tensor rotation, EDEN at integer, fractional and
sub-bit rates, both scales) is converted with builtin ops only and run in
TFLite's interpreter. Rotations are float matmuls whose summation order
differs between the runtimes, so their outputs agree to float tolerance;
given the same quantizer input, the codes and packed bytes are bit-identical.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_compress.encoders import factory
from tff_compress.encoders import prng

_N = 5120  # the Caldas CNN's logits kernel: a 40 x 128 rotation
_CHAINS = {
    'rotation_eden1': dict(transform='rotation', bits=1, quantizer='eden'),
    'rotation_eden2_mse': dict(transform='rotation', bits=2,
                               quantizer='eden', scale='mse'),
    'rotation_eden2_62': dict(transform='rotation', bits=2.62,
                              quantizer='eden'),
    'rotation_eden4': dict(transform='rotation', bits=4, quantizer='eden'),
    'rotation_eden8_mse': dict(transform='rotation', bits=8,
                               quantizer='eden', scale='mse'),
    'rotation_sub_bit': dict(transform='rotation', subsample=0.25, bits=1,
                             quantizer='eden'),
    'rotation_sub_bit_mse': dict(transform='rotation', subsample=0.5,
                                 bits=3, quantizer='eden', scale='mse'),
    'rotation_uniform2': dict(transform='rotation', bits=2),
    'hadamard_eden3': dict(transform='hadamard', bits=3, quantizer='eden'),
}


def _build(args):
  return factory.build_chain(**dict(dict(subsample=1.0), **args),
                             config_prefix='test')


class _Codec(tf.Module):
  """encode (with the quantizer's input and codes) and decode signatures.

  Side entries travel as one float32 vector ('side', spec order) so that
  every chain has the same signature names.
  """

  def __init__(self, chain, n):
    super().__init__()
    self.chain = chain
    self.n = n
    spec = chain.spec(n)
    self.side = [(k, c) for k, (_, c) in spec.items() if k != 'values']
    values_dtype, values_count = spec['values']
    self.quantizer = next(i for i, s in enumerate(chain.stages)
                          if s.name in ('eden', 'quantize'))

    # The signature names are the functions' names.
    def encode(x, seed):
      return self._encode(x, seed)

    def decode(values, side, seed):
      return self._decode(values, side, seed)

    self.encode = tf.function(encode, input_signature=[
        tf.TensorSpec([n], tf.float32), tf.TensorSpec([2], tf.int64)])
    self.decode = tf.function(decode, input_signature=[
        tf.TensorSpec([values_count], tf.as_dtype(values_dtype)),
        tf.TensorSpec([sum(c for _, c in self.side)], tf.float32),
        tf.TensorSpec([2], tf.int64)])

  def _encode(self, x, seed):
    # Chain.encode, keeping the quantizer's input and output on the way.
    out, v, taps = {}, x, {}
    for i, s in enumerate(self.chain.stages):
      if i == self.quantizer:
        taps['quantizer_input'] = v
      encoded = s.encode(v, prng.fold_in(seed, i))
      out.update({f'{s.name}/{k}': t for k, t in encoded.items()
                  if k != 'values'})
      v = encoded['values']
      if i == self.quantizer:
        taps['codes'] = v
    side = tf.concat([out[k] for k, _ in self.side], 0)
    return dict(taps, values=v, side=side)

  def _decode(self, values, side, seed):
    encoded, start = {'values': values}, 0
    for key, count in self.side:
      encoded[key] = side[start:start + count]
      start += count
    return {'x': self.chain.decode(encoded, [self.n], seed)}


def _interpreter(module):
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.encode.get_concrete_function(),
       module.decode.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  interpreter = tf.lite.Interpreter(
      model_content=converter.convert(),
      experimental_op_resolver_type=(
          tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
  return interpreter


class TfliteTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(k, k) for k in sorted(_CHAINS)])
  def test_builtin_only_and_equal_to_tensorflow(self, name):
    chain = _build(_CHAINS[name])
    module = _Codec(chain, _N)
    interpreter = _interpreter(module)
    self.assertCountEqual(interpreter.get_signature_list(),
                          ['encode', 'decode'])
    lite_encode = interpreter.get_signature_runner('encode')
    lite_decode = interpreter.get_signature_runner('decode')
    quantizer = chain.stages[module.quantizer]
    packer = chain.stages[module.quantizer + 1]
    rng = np.random.default_rng(0)
    for trial, seed in enumerate(([0, 0], [-1, 2**62 + 5], [12345, 678])):
      # A heavy-tailed update-like vector.
      x = (rng.standard_t(3, size=_N) * 1e-3).astype(np.float32)
      seed = np.array(seed, np.int64)
      want = {k: v.numpy() for k, v in module.encode(x, seed).items()}
      if trial == 0:  # the instrumented encode is Chain.encode
        enc = chain.encode(tf.constant(x), tf.constant(seed))
        np.testing.assert_array_equal(want['values'], enc['values'])
      got = lite_encode(x=x, seed=seed)
      scale = np.abs(want['quantizer_input']).max()
      np.testing.assert_allclose(got['quantizer_input'],
                                 want['quantizer_input'], rtol=1e-5,
                                 atol=1e-6 * scale)
      # Same quantizer input -> bit-identical codes and bytes.
      q_seed = prng.fold_in(tf.constant(seed), module.quantizer)
      codes = quantizer.encode(tf.constant(got['quantizer_input']),
                               q_seed)['values'].numpy()
      np.testing.assert_array_equal(got['codes'], codes)
      np.testing.assert_array_equal(
          got['values'],
          packer.encode(tf.constant(codes), None)['values'].numpy())
      # Across runtimes: a code flips only for a value within float
      # rounding of a decision boundary.
      self.assertGreater(np.mean(got['codes'] == want['codes']), 0.999)
      np.testing.assert_allclose(got['side'], want['side'], rtol=1e-5)
      # Decoding the same payload agrees to float tolerance.
      expected = module.decode(want['values'], want['side'], seed)['x']
      decoded = lite_decode(values=want['values'], side=want['side'],
                            seed=seed)['x']
      np.testing.assert_allclose(
          decoded, expected, rtol=1e-5,
          atol=1e-6 * float(np.abs(expected).max()))


if __name__ == '__main__':
  absltest.main()

"""Benchmark: our codec chains vs tfmot's tensor_encoding on the Caldas CNN.

Encode+decode of every Caldas CNN tensor the codecs compress (>= 1000
elements, the default min_size: 51,200, 1,605,632 and 5,120 floats), all
contenders as `tf.function` graphs in this process, alternating, warm-up
then the median of N repetitions. tfmot's chain is Flatten -> Hadamard ->
(stochastic) UniformQuantization -> Bitpacking
(`te.encoders.hadamard_quantization`); ours are chunked Hadamard ->
stochastic quantize -> bitpack, Kashin -> quantize -> bitpack, and the
whole-tensor rotation -> EDEN -> bitpack (unbiased, 3 rotation layers; and
the 2-layer minimum-error broadcast codec). MSE and bytes are printed so the
comparison is like for like (these are the untrained model's weights, not
updates: benchmarks/codec_quality.py has the error per bit on real updates).

  ./bazelw run //benchmarks:codec_speed -- --reps=15
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_REPS = flags.DEFINE_integer('reps', 15, 'Timed repetitions per codec.')
_BITS = flags.DEFINE_list('bits', ['8', '2'], 'Quantization bits to compare.')


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
  from tff_compress.encoders import chain as chain_lib
  from tff_compress.encoders import factory
  from tff_compress.models import registry
  # pylint: enable=g-import-not-at-top

  model = registry.build_model('caldas_cnn', (28, 28, 1), 10)
  tensors = [tf.constant(w) for w in model.get_weights() if w.size >= 1000]
  print('tensors:', [int(t.shape.num_elements()) for t in tensors])

  def ours(bits, transform='hadamard', **kwargs):
    chain = factory.build_chain(transform, 1.0, bits, 'bench', **kwargs)

    @tf.function
    def run(seed):
      out, nbytes = [], tf.constant(0, tf.int64)
      for i, t in enumerate(tensors):
        s = tf.random.experimental.stateless_fold_in(seed, i)
        enc = chain.encode(t, s)
        nbytes += chain_lib.payload_bytes(enc)
        out.append(chain.decode(enc, t.shape, s))
      return out, nbytes
    return run

  def tfmot(bits):
    encoders = [te.encoders.as_simple_encoder(
        te.encoders.hadamard_quantization(bits),
        tf.TensorSpec(t.shape, tf.float32)) for t in tensors]

    @tf.function
    def run(seed):
      del seed
      out, nbytes = [], tf.constant(0, tf.int64)
      for enc_fn, t in zip(encoders, tensors):
        encoded, _ = enc_fn.encode(t, enc_fn.initial_state())
        for v in tf.nest.flatten(encoded):
          nbytes += tf.size(v, out_type=tf.int64) * v.dtype.size
        out.append(enc_fn.decode(encoded))
      return out, nbytes
    return run

  def timed(fn):
    seed = tf.constant([1, 2], tf.int64)
    out, nbytes = fn(seed)  # trace + warm-up
    fn(seed)
    mse = float(np.mean([np.mean((o.numpy() - t.numpy())**2)
                         for o, t in zip(out, tensors)]))
    return fn, mse, int(nbytes)

  print(f'{"codec":<30} {"median ms":>10} {"MSE":>11} {"bytes":>11}')
  for bits in map(int, _BITS.value):
    contenders = {
        f'ours hadamard {bits}-bit': timed(ours(bits)),
        f'tfmot hadamard {bits}-bit': timed(tfmot(bits)),
        f'ours kashin {bits}-bit': timed(ours(bits, 'kashin')),
        f'ours rotation+eden {bits}-bit': timed(
            ours(bits, 'rotation', quantizer='eden')),
        f'ours eden mse {bits}-bit': timed(
            ours(bits, 'rotation', quantizer='eden', scale='mse')),
    }
    times = {k: [] for k in contenders}
    seed = tf.constant([3, 4], tf.int64)
    for _ in range(_REPS.value):
      for name, (fn, _, _) in contenders.items():
        t0 = time.perf_counter()
        result = fn(seed)
        _ = result[1].numpy()
        times[name].append(time.perf_counter() - t0)
    for name, (_, mse, nbytes) in contenders.items():
      print(f'{name:<30} {1e3 * statistics.median(times[name]):10.1f} '
            f'{mse:11.3e} {nbytes:11,d}')
    ratio = (statistics.median(times[f'tfmot hadamard {bits}-bit']) /
             statistics.median(times[f'ours hadamard {bits}-bit']))
    print(f'speed-up ours vs tfmot at {bits} bits (median): {ratio:.2f}x')


if __name__ == '__main__':
  app.run(main)

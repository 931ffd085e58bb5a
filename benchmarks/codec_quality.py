"""Benchmark: codec error per bit on Gaussian and real Caldas CNN updates.

For every chain, on (a) a Gaussian vector of 2^16 floats and (b) the Caldas
CNN's update tensors after one local epoch (lr 0.02, batch 20) of client 0's
embedded MNIST digits (50 Dirichlet clients, the default partition), from
the initial model and from a model pre-trained 3 epochs on all digits, it
prints

* bits/coord: 8 * bytes of the encoded tensors / n (codes + side floats;
  the seed is shared and not counted, for either side);
* vNMSE = mean over `--seeds` seeds of ||x-hat - x||^2 / ||x||^2;
* bias = ||mean over seeds of x-hat - x|| / ||x||, and the same divided by
  its noise floor sqrt(vNMSE / seeds) (~1 for an unbiased codec);
* ms: median encode+decode time (`tf.function`, warm), all contenders of a
  tensor timed alternately in this process.

Contenders: our chains (`factory.build_chain`), tfmot's tensor_encoding
`hadamard_quantization` (padded Hadamard + stochastic uniform quantization,
what the project's codecs were compared with so far), and the EDEN authors'
TensorFlow code (github amitport/EDEN-Distributed-Mean-Estimation, folder
tf/, `eden.eden_roundtrip`), imported from `--eden_dir` at run time with its
git submodule (google-research/federated at the commit it pins) populated;
without it those rows are skipped with a note. The peer pads each tensor to
the next power of two and sends a code for every padded coordinate
(+31 % for the 1,605,632-float dense kernel): its bits/coord count that.
"ours@peer" rows give our chain the peer's real bits per coordinate (a
fractional EDEN rate), so vNMSE is compared at equal bits.

Sections (--sections): quality (the table), speed (encode+decode on the
dense kernel: ours vs the peer, alternating, `--reps` medians), entropy
(empirical entropy of EDEN's codes vs their packed bits, and what zlib/lzma
save on the real payload bytes, with their time), layers (the bias of 1-bit
EDEN after 1-4 randomized Hadamard layers over 4,000 seeds, on a
heavy-tailed 400-float vector and the conv1 update: why EDEN's unbiased
scale gets 3 rotation layers).

  ./bazelw run //benchmarks:codec_quality -- --eden_dir=/tmp/eden
"""

from __future__ import annotations

import collections
import itertools
import lzma
import math
import os
import statistics
import sys
import time
import zlib

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_EDEN_DIR = flags.DEFINE_string(
    'eden_dir', '', 'Checkout of amitport/EDEN-Distributed-Mean-Estimation '
    'with tf/google_research_federated populated; empty: skip the peer.')
_SEEDS = flags.DEFINE_integer('seeds', 20, 'Seeds per vNMSE / bias.')
_REPS = flags.DEFINE_integer('reps', 7, 'Timed repetitions (medians).')
_SECTIONS = flags.DEFINE_list(
    'sections', ['quality', 'speed', 'entropy', 'layers'],
    'quality, speed, entropy, layers.')
_TENSORS = flags.DEFINE_list(
    'tensors', ['gaussian', 'conv1', 'conv2', 'dense1', 'logits'],
    'gaussian and/or Caldas CNN kernels (conv1, conv2, dense1, logits).')
_BITS = flags.DEFINE_list('bits', ['1', '2', '4'], 'Nominal bit widths.')
_SUB_BIT = flags.DEFINE_list('sub_bit', ['0.5', '0.1'],
                             'Peer subsampling fractions p at 1 bit.')


def client_updates() -> 'collections.OrderedDict[str, np.ndarray]':
  """{'init/<layer>' | 'pre/<layer>': float32 update} of the CNN kernels."""
  # pylint: disable=g-import-not-at-top
  from tff_compress.data import embedded_mnist
  from tff_compress.data import partition
  from tff_compress.models import registry
  # pylint: enable=g-import-not-at-top
  x, y, _, _ = embedded_mnist.load_embedded_mnist(0.2, seed=0)
  client = partition.partition_dirichlet(y, 50, 0.5, seed=0)[0]
  tf.keras.utils.set_random_seed(0)

  def model():
    m = registry.build_model('caldas_cnn', (28, 28, 1), 10)
    m.compile(optimizer=tf.keras.optimizers.SGD(0.02),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
    return m

  out = collections.OrderedDict()
  for start, pretrain_epochs in (('init', 0), ('pre', 3)):
    m = model()
    if pretrain_epochs:
      m.fit(x, y, batch_size=20, epochs=pretrain_epochs, verbose=0)
    before = [w.copy() for w in m.get_weights()]
    m.fit(x[client], y[client], batch_size=20, epochs=1, verbose=0,
          shuffle=False)
    for var, w0, w1 in zip(m.weights, before, m.get_weights()):
      layer, kind = var.name.split('/')[:2]
      if kind.startswith('kernel'):
        out[f'{start}/{layer}'] = (w1 - w0).ravel().astype(np.float32)
  return out


def _import_peer(eden_dir: str):
  """The peer's `eden` module, or None (with a printed note)."""
  if not eden_dir:
    print('note: --eden_dir not set; the EDEN peer columns are skipped')
    return None
  paths = [os.path.join(eden_dir, 'tf'),
           os.path.join(eden_dir, 'tf', 'google_research_federated')]
  sys.path[:0] = paths
  try:
    import eden as peer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'note: cannot import the EDEN peer from {eden_dir} ({e}); its '
          'tf/google_research_federated submodule must hold distributed_dp; '
          'the peer columns are skipped')
    return None
  return peer


class Contender:
  """A codec: `round_trip(x, seed_index)` and its real bits per coordinate."""

  def __init__(self, label, round_trip, bits):
    self.label = label
    self.round_trip = round_trip
    self.bits = bits


def ours(label, chain, x):
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import chain as chain_lib
  # pylint: enable=g-import-not-at-top
  n = int(x.shape[0])

  @tf.function(autograph=False)
  def run(x, seed):
    enc = chain.encode(x, seed)
    return chain.decode(enc, [n], seed), chain_lib.payload_bytes(enc)

  _, nbytes = run(x, tf.constant([0, 1], tf.int64))
  return Contender(label, lambda x, i: run(x, tf.constant([i, 1], tf.int64))[0],
                   8 * int(nbytes) / n)


def tfmot(label, bits, x):
  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
  # pylint: enable=g-import-not-at-top
  n = int(x.shape[0])
  encoder = te.encoders.as_simple_encoder(
      te.encoders.hadamard_quantization(bits), tf.TensorSpec([n], tf.float32))

  @tf.function(autograph=False)
  def run(x):
    encoded, _ = encoder.encode(x, encoder.initial_state())
    nbytes = tf.add_n([tf.size(v, out_type=tf.int64) * v.dtype.size
                       for v in tf.nest.flatten(encoded)])
    return encoder.decode(encoded), nbytes

  _, nbytes = run(x)
  # tfmot draws its own seeds from stateful ops: each call differs.
  return Contender(label, lambda x, i: run(x)[0], 8 * int(nbytes) / n)


def peer_bits(n: int, bits: int, p: float) -> float:
  """The peer's real bits/coord: a b-bit code per kept padded coordinate
  (p of next_pow2(n) in expectation) plus its float32 scale."""
  padded = 1 << max(0, (n - 1).bit_length())
  return (bits * p * padded + 32) / n


def peer(label, module, bits, p, x):
  n = int(x.shape[0])

  @tf.function(autograph=False)
  def run(x, seed):
    return module.eden_roundtrip(x, hadamard_seed=seed, rand_p_seed=seed + 1,
                                 p=p, bits=bits)

  return Contender(
      label, lambda x, i: run(x, tf.constant([i, 7 * i + 3], tf.int32)),
      peer_bits(n, bits, p))


def quality(contender, x, seeds):
  """(vNMSE, relative bias, bias / noise floor) over `seeds` seeds."""
  xs = x.numpy().astype(np.float64)
  norm2 = float(xs @ xs)
  total = np.zeros_like(xs)
  errors = []
  for i in range(seeds):
    d = contender.round_trip(x, i).numpy().astype(np.float64)
    errors.append(float(np.sum((d - xs)**2)) / norm2)
    total += d
  vnmse = float(np.mean(errors))
  bias = float(np.linalg.norm(total / seeds - xs)) / math.sqrt(norm2)
  return vnmse, bias, bias / math.sqrt(vnmse / seeds)


def median_ms(contenders, x, reps):
  """Median encode+decode milliseconds of each, timed alternately."""
  times = {c.label: [] for c in contenders}
  for c in contenders:  # warm up
    c.round_trip(x, 0).numpy()
  for r in range(reps):
    for c in contenders:
      t0 = time.perf_counter()
      c.round_trip(x, r).numpy()
      times[c.label].append(time.perf_counter() - t0)
  return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _padded_rate(n, bits):
  """Our EDEN rate that spends the peer's real bits on an n-float tensor."""
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import rotation
  # pylint: enable=g-import-not-at-top
  c, w = rotation.geometry(n)
  # A fractional rate sends two float32 scales (one per rate segment). With
  # no padding (n a power of two) the peer spends what our integer rate
  # does, and the second scale would push the fractional rate just below it.
  rate = round((peer_bits(n, bits, 1.0) * n - 64) / (c * w), 4)
  return bits if rate <= bits else min(8.0, rate)


def contenders_for(x, peer_module):
  """Every contender for tensor x, and {nominal bits: (ours, peer) labels}."""
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import factory
  from tff_compress.encoders import rotation
  # pylint: enable=g-import-not-at-top
  n = int(x.shape[0])
  out, pairs = [], {}

  def chain(*args, **kwargs):
    return factory.build_chain(*args, config_prefix='bench', **kwargs)

  for b in map(int, _BITS.value):
    out.append(ours(f'hadamard {b}b (old default)',
                    chain('hadamard', 1.0, b), x))
    out.append(ours(f'kashin {b}b', chain('kashin', 1.0, b), x))
    out.append(tfmot(f'tfmot hadamard {b}b', b, x))
    out.append(ours(f'hadamard+eden {b}b', chain('hadamard', 1.0, b,
                                                 quantizer='eden'), x))
    out.append(ours(f'rotation+eden {b}b', chain('rotation', 1.0, b,
                                                 quantizer='eden'), x))
    out.append(ours(f'rotation+eden mse {b}b',
                    chain('rotation', 1.0, b, quantizer='eden', scale='mse'),
                    x))
    equal = out[-2].label  # rotation+eden at b bits
    rate = _padded_rate(n, b)
    if rate != b:
      out.append(ours(f'ours@peer {rate:g}b', chain(
          'rotation', 1.0, rate, quantizer='eden'), x))
      equal = out[-1].label
    if peer_module is not None:
      out.append(peer(f'peer eden {b}b', peer_module, b, 1.0, x))
      pairs[b] = (equal, out[-1].label)
  for p in map(float, _SUB_BIT.value):
    c, w = rotation.geometry(n)
    keep = min(1.0, (peer_bits(n, 1, p) * n - 32) / (c * w))
    out.append(ours(f'rotation+eden 1b keep {keep:.3g}', chain(
        'rotation', keep, 1, quantizer='eden'), x))
    if peer_module is not None:
      out.append(peer(f'peer eden 1b p={p:g}', peer_module, 1, p, x))
      pairs[f'p={p:g}'] = (out[-2].label, out[-1].label)
  return out, pairs


def section_quality(tensors, peer_module):
  print('\n== quality: vNMSE and bias over '
        f'{_SEEDS.value} seeds, encode+decode ms (median of {_REPS.value}) ==')
  summary = []
  for name, x in tensors.items():
    contenders, pairs = contenders_for(x, peer_module)
    ms = median_ms(contenders, x, _REPS.value)
    print(f'\n{name}: n = {int(x.shape[0]):,}')
    print(f'  {"chain":<34}{"bits/coord":>11}{"vNMSE":>10}{"bias":>9}'
          f'{"/floor":>8}{"ms":>9}')
    results = {}
    for c in contenders:
      vnmse, bias, floor = quality(c, x, _SEEDS.value)
      results[c.label] = (c.bits, vnmse)
      print(f'  {c.label:<34}{c.bits:11.4f}{vnmse:10.4g}{bias:9.4f}'
            f'{floor:8.2f}{ms[c.label]:9.1f}')
    for key, (mine, theirs) in pairs.items():
      summary.append((name, key, results[mine], results[theirs]))
  if summary:
    print('\nequal bits: our vNMSE / peer vNMSE (target <= 1.1)')
    for name, key, (b_ours, v_ours), (b_peer, v_peer) in summary:
      print(f'  {name:<14} {str(key):>6}: ours {v_ours:.4g} at {b_ours:.3f} '
            f'b vs peer {v_peer:.4g} at {b_peer:.3f} b -> '
            f'{v_ours / v_peer:.3f}')


def section_speed(tensors, peer_module):
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import factory
  # pylint: enable=g-import-not-at-top
  name = next((k for k in tensors if k.endswith('dense1')), None)
  if name is None or peer_module is None:
    print('\nnote: the speed section needs the dense1 tensor and the peer')
    return
  x = tensors[name]
  print(f'\n== speed: encode+decode of {name} ({int(x.shape[0]):,} floats), '
        f'ours vs peer alternating, median of {_REPS.value} ==')
  for b in map(int, _BITS.value):
    mine = ours(f'rotation+eden {b}b', factory.build_chain(
        'rotation', 1.0, b, 'bench', quantizer='eden'), x)
    theirs = peer(f'peer eden {b}b', peer_module, b, 1.0, x)
    ms = median_ms([mine, theirs], x, _REPS.value)
    print(f'  {b} bit: ours {ms[mine.label]:.1f} ms, peer '
          f'{ms[theirs.label]:.1f} ms -> {ms[theirs.label] / ms[mine.label]:.2f}'
          'x faster (target >= 2)')


def _entropy_bits(codes, bits):
  counts = np.bincount(codes, minlength=1 << bits).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())


def section_entropy(tensors):
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import factory
  from tff_compress.encoders import stages
  # pylint: enable=g-import-not-at-top
  print('\n== entropy coding: codes of real payloads (bits/coord of the '
        'wire blob, of an ideal entropy coder, of the blob compressed) ==')
  print(f'  {"tensor":<14}{"codec":<18}{"bits":>5}{"blob":>8}'
        f'{"H(codes)":>10}{"zlib-9":>8}{"ms":>7}{"lzma":>8}{"ms":>7}')
  # EDEN's Lloyd-Max levels are nearly equiprobable by construction; the
  # stochastic uniform quantizer (Caldas' baseline) is the contrast.
  codecs = (('rotation', 'eden'), ('hadamard', 'uniform'))
  for (name, x), (transform, quantizer), b in itertools.product(
      tensors.items(), codecs, map(int, _BITS.value)):
    if name == 'gaussian':
      continue
    n = int(x.shape[0])
    if quantizer == 'uniform' and b not in factory.BITS:
      continue
    chain = factory.build_chain(transform, 1.0, b, 'bench',
                                quantizer=quantizer)
    enc = chain.encode(x, tf.constant([3, 1], tf.int64))
    codes = stages.BitpackStage(b).decode(
        {'values': enc['values']}, chain.lengths(n)[1], None).numpy()
    blob = chain.to_bytes({k: v.numpy() for k, v in enc.items()}, n)
    packed = 8 * len(blob) / n  # the wire blob: header, entries, CRC
    entropy = _entropy_bits(codes, b) * len(codes) / n
    t0 = time.perf_counter()
    z = zlib.compress(blob, 9)
    t1 = time.perf_counter()
    xz = lzma.compress(blob, preset=6)
    t2 = time.perf_counter()
    print(f'  {name:<14}{transform + "+" + quantizer:<18}{b:5d}'
          f'{packed:8.3f}{entropy:10.3f}'
          f'{8 * len(z) / n:8.3f}{1e3 * (t1 - t0):7.1f}'
          f'{8 * len(xz) / n:8.3f}{1e3 * (t2 - t1):7.1f}')


def section_layers(tensors):
  """Bias of 1-bit EDEN after 1-4 randomized Hadamard layers, many seeds."""
  # pylint: disable=g-import-not-at-top
  from tff_compress.encoders import chain as chain_lib
  from tff_compress.encoders import eden
  from tff_compress.encoders import rotation
  from tff_compress.encoders import stages
  # pylint: enable=g-import-not-at-top
  rng = np.random.default_rng(3)
  heavy = rng.normal(size=400) * 0.05
  heavy[rng.choice(400, 5, replace=False)] = rng.normal(size=5)
  vectors = collections.OrderedDict(heavy_tailed_400=tf.constant(
      heavy.astype(np.float32)))
  vectors.update((k, v) for k, v in tensors.items() if k.endswith('conv1'))
  seeds = 4000
  print(f'\n== rotation layers: 1-bit EDEN (unbiased scale) bias over '
        f'{seeds} seeds ==')
  print(f'  {"vector":<18}{"rotation":<26}{"vNMSE":>8}{"bias":>9}'
        f'{"/floor":>8}')
  for name, x in vectors.items():
    n = int(x.shape[0])
    firsts = [('hadamard (1 layer)', stages.HadamardStage())] + [
        (f'rotation {k} layers', rotation.RotationStage(layers=k))
        for k in (2, 3, 4)]
    for label, first in firsts:
      chain = chain_lib.Chain([first, eden.EdenStage(1)])

      @tf.function(autograph=False)
      def run(seeds, chain=chain):
        return tf.map_fn(lambda s: chain.decode(chain.encode(x, s), [n], s),
                         seeds, fn_output_signature=tf.float32)

      decs = run(tf.constant([[i, 5] for i in range(seeds)],
                             tf.int64)).numpy().astype(np.float64)
      xs = x.numpy().astype(np.float64)
      vnmse = float(((decs - xs)**2).sum(axis=1).mean() / (xs @ xs))
      bias = float(np.linalg.norm(decs.mean(axis=0) - xs) /
                   np.linalg.norm(xs))
      print(f'  {name:<18}{label:<26}{vnmse:8.4f}{bias:9.4f}'
            f'{bias / math.sqrt(vnmse / seeds):8.2f}')


def main(argv):
  del argv
  peer_module = _import_peer(_EDEN_DIR.value)
  tensors = collections.OrderedDict()
  if 'gaussian' in _TENSORS.value:
    tensors['gaussian'] = tf.constant(np.random.default_rng(0).normal(
        size=1 << 16).astype(np.float32))
  layers = [t for t in _TENSORS.value if t != 'gaussian']
  if layers:
    for name, u in client_updates().items():
      if name.split('/')[1] in layers:
        tensors[name] = tf.constant(u)
  if 'quality' in _SECTIONS.value:
    section_quality(tensors, peer_module)
  if 'speed' in _SECTIONS.value:
    section_speed(tensors, peer_module)
  if 'entropy' in _SECTIONS.value:
    section_entropy(tensors)
  if 'layers' in _SECTIONS.value:
    section_layers(tensors)


if __name__ == '__main__':
  app.run(main)

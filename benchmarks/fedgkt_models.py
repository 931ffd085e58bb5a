"""Benchmark: FedGKT's edge model vs the whole network FedAvg trains on devices.

For each input shape (embedded MNIST 28x28x1, CIFAR 32x32x3) and each large
network (bottleneck ResNet-20/56/110), prints

* parameters and training FLOPs per example (`models/flops.py`) of the edge
  ResNet-8 and of the whole network, and their ratios (the paper's goal:
  >= 50x fewer parameters, >= 9x fewer FLOPs on the edge);
* the measured time of one training step (batch `--batch`) of each, timed
  alternately in this process (median of `--reps`), as a ratio;
* bytes per round: what one client exchanges with FedAvg-BN (every float32
  variable down, the update and BN statistics up) vs FedGKT (per sample: feature map up at
  32/8/4 bits + 10 float32 logits + int32 label up, 10 float32 logits down),
  and the number of local samples above which FedGKT sends more.

  ./bazelw run //benchmarks:fedgkt_models -- --reps=10
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

_REPS = flags.DEFINE_integer('reps', 10, 'Timed steps per model.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size of the timed steps.')
_DEPTHS = flags.DEFINE_list('depths', ['20', '56', '110'],
                            'Whole-network depths.')

_CLASSES = 10


def _step_fn(model):
  optimizer = tf.keras.optimizers.SGD(0.01)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      out = model(x, training=True)
      logits = out[0] if isinstance(out, (list, tuple)) else out
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=y, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss
  return step


def _median_step_seconds(steps, x, y, reps):
  """Median seconds per step of each function, timed alternately."""
  for step in steps:
    step(x, y)  # trace + warm up
  times = [[] for _ in steps]
  for _ in range(reps):
    for i, step in enumerate(steps):
      t0 = time.perf_counter()
      step(x, y).numpy()
      times[i].append(time.perf_counter() - t0)
  return [statistics.median(t) for t in times]


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from tff_compress.gkt import codec
  from tff_compress.models import flops
  from tff_compress.models import resnet
  # pylint: enable=g-import-not-at-top

  print('| input | whole net | whole params | edge params | params ratio | '
        'whole MFLOPs/ex | edge MFLOPs/ex | FLOPs ratio | measured step '
        'time ratio |')
  print('|---|---|---|---|---|---|---|---|---|')
  traffic = []
  for shape in ((28, 28, 1), (32, 32, 3)):
    edge = resnet.build_edge_classifier(shape, _CLASSES, blocks=2)
    x = tf.random.uniform((_BATCH.value, *shape))
    y = tf.zeros([_BATCH.value], tf.int32)
    edge_step = _step_fn(edge)
    per_sample = {}
    for bits in (32, 8, 4):
      feature = (4 * int(np.prod(resnet.feature_shape(shape))) if bits == 32
                 else codec.FeatureCodec(resnet.feature_shape(shape),
                                         bits).encoded_bytes_per_sample())
      per_sample[bits] = feature + 4 * _CLASSES + 4 + 4 * _CLASSES
    for depth in (int(d) for d in _DEPTHS.value):
      whole = resnet.build_resnet(shape, _CLASSES, depth)
      t_whole, t_edge = _median_step_seconds(
          [_step_fn(whole), edge_step], x, y, _REPS.value)
      wp, ep = flops.count_params(whole), flops.count_params(edge)
      wf = flops.training_flops_per_example(whole)
      ef = flops.training_flops_per_example(edge)
      print(f'| {"x".join(map(str, shape))} | ResNet-{depth} | {wp:,} | '
            f'{ep:,} | {wp / ep:.1f}x | {wf / 1e6:.1f} | {ef / 1e6:.1f} | '
            f'{wf / ef:.2f}x | {t_whole / t_edge:.2f}x |', flush=True)
      # FedAvg-BN sends every variable (BN statistics too) both ways.
      traffic.append((shape, depth,
                      2 * 4 * sum(int(np.prod(v.shape))
                                  for v in whole.weights), per_sample))

  print('\n| input | whole net | FedAvg bytes/client/round (down+up) | '
        'FedGKT bytes/sample 32 / 8 / 4-bit features | break-even samples '
        'per client at 32 / 8 / 4 bits |')
  print('|---|---|---|---|---|')
  for shape, depth, fedavg, per_sample in traffic:
    samples = ' / '.join(f'{per_sample[b]:,}' for b in (32, 8, 4))
    even = ' / '.join(f'{fedavg / per_sample[b]:.0f}' for b in (32, 8, 4))
    print(f'| {"x".join(map(str, shape))} | ResNet-{depth} | {fedavg:,} | '
          f'{samples} | {even} |')


if __name__ == '__main__':
  app.run(main)

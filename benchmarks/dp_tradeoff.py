"""Benchmark: accuracy vs ε of DP-FedAvg, with and without uplink compression.

Every cell is a normal simulation (`simulate_lib.run`) in its own run
directory under --out (re-running reuses finished cells). The grid: no DP,
then `dp.mode=user` with fixed clip `--clip` and noise multipliers
`--sigmas`, each with the float32 uplink and with `--codec` (default: the
README's recommended 1-bit Hadamard uplink with half the coordinates).

  ./bazelw run //benchmarks:dp_tradeoff -- --out=/tmp/dp_bench

Defaults: the embedded digits cut IID into 1,000 clients of 4 examples
(ε depends on the sampling rate K/N, so N must be large for a meaningful
ε; 1,000 is the most the 4,000 training digits allow at 4 examples each),
100 clients per round (q = 0.1), 30 rounds, dense model.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import tensorflow as tf  # pylint: disable=unused-import,wrong-import-position

_OUT = flags.DEFINE_string('out', '/tmp/dp_tradeoff', 'Directory of cells.')
_SIGMAS = flags.DEFINE_list('sigmas', ['0', '0.3', '0.7', '1.0'],
                            'Noise multipliers.')
_CLIP = flags.DEFINE_float('clip', 0.4, 'Fixed clip C.')
_ROUNDS = flags.DEFINE_integer('rounds', 30, 'Rounds per cell.')
_CLIENTS = flags.DEFINE_integer('num_clients', 1000, 'N.')
_PER_ROUND = flags.DEFINE_integer('clients_per_round', 100, 'K.')
_MODEL = flags.DEFINE_string('model', 'dense', 'model.name.')
_CODEC = flags.DEFINE_string(
    'codec', 'hadamard,1,0.5', 'Compressed uplink: transform,bits,subsample.')
_GRID = flags.DEFINE_bool('grid', True, 'Run the accuracy/ε grid.')
_SCALE_CODECS = flags.DEFINE_list(
    'bound_scale_codecs', [],
    'Also report the decoded-norm bound\'s shrink factor for these codecs '
    '(transform:bits:subsample, e.g. hadamard:2:1.0).')


def base_config():
  """The benchmark's base config (before the DP / codec axes)."""
  from tff_compress import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.default_config()
  c.name = 'dp_tradeoff'
  c.rounds = _ROUNDS.value
  c.eval_every = _ROUNDS.value
  c.data.num_clients = _CLIENTS.value
  c.data.partition = 'iid'
  c.clients_per_round = _PER_ROUND.value
  c.model.name = _MODEL.value
  c.client.learning_rate = 0.1
  c.server.momentum = 0.9
  c.dp.clip = _CLIP.value
  return c


def bound_scales(cfg, codec, clients: int = 50):
  """`bounded_encode`'s shrink factors on real first-round client updates.

  One local step (the whole 4-example client is one batch) from the initial
  model at `client.learning_rate`, clipped to `dp.clip`, then encoded with
  `codec` under the decoded-norm bound. Returns the factors (1 = untouched).
  """
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow_federated as tff
  from tff_compress.data import registry as data_registry
  from tff_compress.encoders import bounded
  from tff_compress.encoders import structure
  from tff_compress.learning import task as task_lib
  # pylint: enable=g-import-not-at-top
  data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
  model = task_lib.build_task(cfg.model.name, data,
                              seed=cfg.seed).keras_model_fn()
  value_type = tff.StructWithPythonType(
      [tff.TensorType(np.float32, v.shape) for v in model.trainable_variables],
      list)
  coder = structure.StructureCodec(value_type, codec)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  encode = tf.function(lambda v, s: bounded.bounded_encode_with_info(
      coder, v, s, cfg.dp.clip).scale)
  out = []
  for i, cid in enumerate(data.client_ids[:clients]):
    x, y = data.client_arrays(cid)
    with tf.GradientTape() as tape:
      l = loss(y, model(x, training=True))
    grads = tape.gradient(l, model.trainable_variables)
    update = [cfg.client.learning_rate * g for g in grads]
    out.append(float(encode(update, tf.constant([i, 0], tf.int64))))
  return out


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import io
  import json
  from absl import logging
  from tff_compress import config_lib
  from tff_compress import simulate_lib
  from tff_compress.encoders import settings as codec_settings
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  transform, bits, sub = _CODEC.value.split(',')
  codecs = {'float32': ('none', 32, 1.0),
            f'{transform}-{bits}b-s{sub}': (transform, int(bits), float(sub))}
  cells = []
  for codec_name, (t, b, s) in codecs.items():
    for sigma in [None] + [float(x) for x in _SIGMAS.value]:
      c = base_config()
      c.uplink.transform, c.uplink.bits, c.uplink.subsample = t, b, s
      if sigma is not None:
        c.dp.mode = 'user'
        c.dp.noise_multiplier = sigma
      cells.append((codec_name, sigma, config_lib.validate(c)))

  rows = []
  for codec_name, sigma, c in (cells if _GRID.value else []):
    run_dir = os.path.join(_OUT.value,
                           f'{codec_name}-{config_lib.config_hash(c)}')
    path = os.path.join(run_dir, 'summary.json')
    if os.path.exists(path):
      with open(path) as f:
        summary = json.load(f)
    else:
      summary = simulate_lib.run(c, run_dir, out=io.StringIO())
    privacy = summary.get('privacy') or {}
    rows.append((codec_name, sigma, summary['final_eval_accuracy'],
                 summary.get('epsilon'),
                 privacy.get('epsilon_poisson_approximation'),
                 summary['mean_bytes_up_per_client'],
                 summary['mean_round_seconds'], run_dir))
    print(f'done {codec_name} sigma={sigma} acc '
          f'{summary["final_eval_accuracy"]:.4f}', flush=True)

  scale_codecs = [v for v in codecs.values() if v[1] != 32] + [
      (t, int(b), float(s)) for t, b, s in
      (x.split(':') for x in _SCALE_CODECS.value)]
  print('\nDecoded-norm bound: factor applied to first-round client updates '
        f'(clip {_CLIP.value}, 50 clients)')
  print('| transform | bits | subsample | mean | min | max |')
  print('|---|---|---|---|---|---|')
  for t, b, s in scale_codecs:
    scales = bound_scales(base_config(),
                          codec_settings.UplinkCodec(t, b, s))
    print(f'| {t} | {b} | {s} | {sum(scales) / len(scales):.3f} | '
          f'{min(scales):.3f} | {max(scales):.3f} |', flush=True)

  if not rows:
    return
  print(f'\nN={_CLIENTS.value} K={_PER_ROUND.value} rounds={_ROUNDS.value} '
        f'clip={_CLIP.value} delta={base_config().dp.delta} '
        f'model={_MODEL.value}')
  print('| uplink | σ | final acc | ε (uniform, replace-one) | '
        'ε (Poisson approx.) | bytes up / client | s / round |')
  print('|---|---|---|---|---|---|---|')
  for codec_name, sigma, acc, eps, eps_p, up, secs, _ in rows:
    fmt = lambda e: '—' if e is None else ('∞' if e == float('inf')
                                           else f'{e:.3g}')
    print(f'| {codec_name} | {"no DP" if sigma is None else sigma} | '
          f'{acc:.4f} | {fmt(eps)} | {fmt(eps_p)} | {up:,.0f} | '
          f'{secs:.2f} |')


if __name__ == '__main__':
  app.run(main)

"""Reference device client: plays a phone with the TFLite runtime only.

Runs without TensorFlow (`.venv-device`: tflite-runtime or ai-edge-litert
and numpy), so a trainer that secretly needed Flex ops would fail here. One
client round:

  1. parse the server's broadcast message (`messages.py`) against the
     layout in manifest.json, feed its tensors to `load_broadcast`;
  2. train E epochs through `train`, batches in the order the simulation
     uses (`batch_order`: a fresh permutation per epoch from the client's
     shuffle seed, consecutive batches of B, the last one shorter: `train`
     takes 1..max_batch_size rows as they are, and its loss is their mean);
  3. subtract the trained weights from the received ones (TFF's update),
     run `encode_update` on it and pack its tensors, the seed and the weight
     (examples trained; a non-finite update is sent as zeros with weight 0,
     as TFF's client work does) into the update message the server decodes
     with the simulation's decoder.

  .venv-device/bin/python -m mobile_export.device_client \
      --model_dir=runs/X/tflite --broadcast=broadcast.bin \
      --data=client.npz --out=update.bin

`client.npz` holds `x` (float32 [n, *input_shape]) and `y` (int32 [n]),
optionally `shuffle_seed`. Wrong shapes, dtypes, labels or payloads end
with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from mobile_export import messages

RUNTIMES = ('tflite_runtime', 'ai_edge_litert')


class DeviceError(ValueError):
  """A problem with the model files, the inputs or a payload."""


def batch_order(n: int, batch_size: int, epochs: int,
                shuffle_seed: int) -> list[np.ndarray]:
  """Index batches of one client round, as `make_client_dataset` orders them.

  E permutations of range(n) from `np.random.default_rng(shuffle_seed)`,
  concatenated and cut into consecutive batches of `batch_size` (the last
  one holds the remainder).
  """
  rng = np.random.default_rng(shuffle_seed)
  order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
  return [order[a:a + batch_size] for a in range(0, len(order), batch_size)]


def _interpreter_class(runtime: str):
  if runtime == 'tflite_runtime':
    from tflite_runtime import interpreter  # pylint: disable=g-import-not-at-top
    return interpreter.Interpreter
  if runtime == 'ai_edge_litert':
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    return interpreter.Interpreter
  raise DeviceError(f'--runtime={runtime!r}; allowed: {", ".join(RUNTIMES)}')


def _specs(tensors: Sequence[dict], io_key: str):
  specs, sizes, names = [], [], []
  for t in tensors:
    specs.append({e['key']: (np.dtype(e['dtype']), int(e['count']))
                  for e in t['entries']})
    sizes.append(int(t['elements']))
    names.append({e['key']: e[io_key] for e in t['entries']})
  return specs, sizes, names


class DeviceTrainer:
  """trainer.tflite + manifest.json behind checked calls."""

  def __init__(self, model_dir: str, runtime: str = 'tflite_runtime',
               num_threads: Optional[int] = None):
    manifest_path = os.path.join(model_dir, 'manifest.json')
    model_path = os.path.join(model_dir, 'trainer.tflite')
    for path in (manifest_path, model_path):
      if not os.path.isfile(path):
        raise DeviceError(f'missing {path} (run //mobile_export:export)')
    with open(manifest_path) as f:
      self.manifest = json.load(f)
    m = self.manifest
    self.input_shape = tuple(m['input_shape'])
    self.num_classes = int(m['num_classes'])
    self.batch_size = int(m['batch_size'])
    if m.get('format', 1) < 2 or 'max_batch_size' not in m:
      raise DeviceError(
          f'{manifest_path} is format {m.get("format", 1)} (a trainer that '
          'takes exactly batch_size rows); re-export it with '
          '//mobile_export:export')
    self.max_batch_size = int(m['max_batch_size'])
    self.epochs = int(m['epochs'])
    self.weight_shapes = [tuple(w['shape']) for w in m['weights']]
    try:
      self._interpreter = _interpreter_class(runtime)(
          model_path=model_path, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
      raise DeviceError(f'{runtime} cannot load {model_path}: {e}') from e
    available = set(self._interpreter.get_signature_list())
    missing = sorted(set(m['signatures']) - available)
    if missing:
      raise DeviceError(f'trainer.tflite lacks signatures {missing}')
    self._runners = {k: self._interpreter.get_signature_runner(k)
                     for k in m['signatures']}
    self._broadcast = _specs(m['broadcast_tensors'], 'input')
    self._update = _specs(m['update_tensors'], 'output')
    self.received: Optional[list[np.ndarray]] = None  # by load_broadcast
    self.round = 0

  # ---- checked signature calls ----

  def _check_x(self, x, rows: Optional[int] = None) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
      raise DeviceError(f'x must be float32, got {x.dtype}')
    if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
      raise DeviceError(
          f'x has shape {list(x.shape)}; expected [rows, '
          f'{", ".join(map(str, self.input_shape))}]')
    if rows is not None and not 1 <= x.shape[0] <= rows:
      raise DeviceError(f'x has {x.shape[0]} rows; train takes 1..{rows} '
                        '(max_batch_size in manifest.json)')
    if not np.all(np.isfinite(x)):
      raise DeviceError('x has non-finite values')
    return x

  def train(self, x, y) -> float:
    """One step on 1..max_batch_size rows; the mean loss over them.

    A wrong shape, dtype or label, or more rows than the export's maximum,
    is a DeviceError here. The runtime would resize to any shape: a wrong
    image size fails inside a kernel with a cryptic message or, for a
    larger image (30x30 for 28x28), silently trains on a crop.
    """
    x = self._check_x(x, self.max_batch_size)
    y = np.asarray(y)
    if y.dtype != np.int32:
      raise DeviceError(f'y must be int32 class indices, got {y.dtype}')
    if y.shape != (x.shape[0],):
      raise DeviceError(f'y has shape {list(y.shape)}; expected '
                        f'[{x.shape[0]}] (one label per row of x)')
    if y.min() < 0 or y.max() >= self.num_classes:
      raise DeviceError(f'labels {y.min()}..{y.max()} are outside '
                        f'0..{self.num_classes - 1}')
    return float(self._runners['train'](x=x, y=y)['loss'])

  def infer(self, x) -> np.ndarray:
    return self._runners['infer'](x=self._check_x(x))['logits']

  def parameters(self) -> list[np.ndarray]:
    out = self._runners['parameters']()
    return [out[f'a{i}'] for i in range(len(self.weight_shapes))]

  def restore(self, weights: Sequence[np.ndarray]) -> None:
    """Sets the weights (and makes them the reference of the update)."""
    if len(weights) != len(self.weight_shapes):
      raise DeviceError(f'restore got {len(weights)} tensors, expected '
                        f'{len(self.weight_shapes)}')
    args = {}
    for i, (w, shape) in enumerate(zip(weights, self.weight_shapes)):
      w = np.asarray(w)
      if w.dtype != np.float32 or w.shape != shape:
        raise DeviceError(f'weight a{i} is {w.dtype} {list(w.shape)}; '
                          f'expected float32 {list(shape)}')
      args[f'a{i}'] = w
    self._runners['restore'](**args)
    self.received = [np.array(w, np.float32) for w in weights]

  def load_broadcast(self, blob: bytes) -> int:
    """Decodes and loads a broadcast message; returns its round index."""
    specs, sizes, names = self._broadcast
    try:
      msg = messages.unpack(messages.BROADCAST, blob, specs, sizes)
    except messages.PayloadError as e:
      raise DeviceError(f'bad broadcast: {e}') from e
    args = {'round': np.array(msg.round, np.int64)}
    if not self.manifest['codecs']['broadcast']['identity']:
      args['seed'] = msg.seed
    for entries, name_of in zip(msg.tensors, names):
      for key, value in entries.items():
        args[name_of[key]] = value
    out = self._runners['load_broadcast'](**args)
    self.received = [out[f'a{i}'] for i in range(len(self.weight_shapes))]
    self.round = msg.round
    return msg.round

  def update(self) -> list[np.ndarray]:
    """received - trained weights (TFF's model-delta convention)."""
    if self.received is None:
      raise DeviceError('no round started: call load_broadcast or restore')
    return [r - p for r, p in zip(self.received, self.parameters())]

  def encode_update(self, examples: int) -> tuple[bytes, bool]:
    """(update message, finite) of the current round; weight = examples."""
    specs, sizes, names = self._update
    update = self.update()
    finite = all(np.all(np.isfinite(u)) for u in update)
    args = {'round': np.array(self.round, np.int64)}
    for i, u in enumerate(update):
      args[f'u{i}'] = u if finite else np.zeros_like(u)
    out = self._runners['encode_update'](**args)
    # A non-finite update is sent as zeros with weight 0 (TFF's client work
    # does the same).
    tensors = [{key: out[name_of[key]] for key in spec}
               for spec, name_of in zip(specs, names)]
    seed = out['seed']
    blob = messages.pack(messages.UPDATE, int(seed[1]), seed, tensors, specs,
                         sizes, weight=float(examples) if finite else 0.0)
    return blob, finite

  def run_round(self, broadcast: bytes, x, y, shuffle_seed: int,
                epochs: Optional[int] = None) -> tuple[bytes, dict]:
    """One client round: (update message, summary)."""
    x = self._check_x(x)
    y = np.asarray(y)
    if y.shape != (len(x),):
      raise DeviceError(f'y has shape {list(y.shape)}; expected [{len(x)}]')
    t0 = time.perf_counter()
    round_index = self.load_broadcast(broadcast)
    epochs = self.epochs if epochs is None else epochs
    losses = []
    for idx in batch_order(len(x), self.batch_size, epochs, shuffle_seed):
      losses.append(self.train(x[idx], y[idx]))
    blob, finite = self.encode_update(examples=epochs * len(x))
    return blob, {
        'round': round_index, 'examples': epochs * len(x),
        'steps': len(losses), 'mean_loss': float(np.mean(losses)),
        'finite': finite, 'update_bytes': len(blob),
        'broadcast_bytes': len(broadcast),
        'seconds': time.perf_counter() - t0,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='device_client', description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_dir', required=True,
                      help='folder with trainer.tflite and manifest.json')
  parser.add_argument('--broadcast', required=True,
                      help='broadcast message from the server')
  parser.add_argument('--data', required=True,
                      help='.npz with x (float32) and y (int32)')
  parser.add_argument('--out', required=True, help='update message to write')
  parser.add_argument('--shuffle_seed', type=int, default=None,
                      help='default: the npz entry shuffle_seed, else 0')
  parser.add_argument('--epochs', type=int, default=None,
                      help='default: client.epochs of the run')
  parser.add_argument('--runtime', default='tflite_runtime', choices=RUNTIMES)
  parser.add_argument('--threads', type=int, default=None)
  args = parser.parse_args(argv)
  try:
    device = DeviceTrainer(args.model_dir, args.runtime, args.threads)
    try:
      with np.load(args.data) as npz:
        x, y = npz['x'], npz['y']
        seed = int(npz['shuffle_seed']) if 'shuffle_seed' in npz else 0
    except (OSError, ValueError, KeyError) as e:
      raise DeviceError(f'cannot read {args.data}: {e}') from e
    if args.shuffle_seed is not None:
      seed = args.shuffle_seed
    with open(args.broadcast, 'rb') as f:
      broadcast = f.read()
    blob, summary = device.run_round(broadcast, x, y, seed, args.epochs)
    with open(args.out, 'wb') as f:
      f.write(blob)
  except (DeviceError, OSError) as e:
    print(f'device_client: error: {e}', file=sys.stderr, flush=True)
    return 2
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())

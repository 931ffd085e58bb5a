"""The on-device trainer: a `tf.Module` whose signatures convert to TFLite.

Signatures (input -> output names; Flower's Android convention for the first
four):

* `train(x, y) -> loss`: one SGD(M) step on a batch of any number of rows
  (x [B, ...], y [B]; the host bounds B by the export's maximum, see
  export_lib); the loss and its gradient are the mean over the rows whose
  label is >= 0, so a short last batch is exact without padding, and rows
  labelled -1 (padding of a fixed-size buffer) contribute nothing;
* `infer(x) -> logits`: any number of rows;
* `parameters() -> a0..aN`: the weights, Keras order;
* `restore(a0..aN) -> a0..aN`: set the weights and reset the optimizer (a
  new local round);
* `load_broadcast(round, [seed,] t<i>_<entry>...) -> a0..aN`: decode the
  server's broadcast payload (the tensors `StructureCodec.encode` produced
  on the server for tensor i; entry names have '/' replaced by '_') with the
  same `StructureCodec.decode` the simulation uses, then as `restore`; the
  decoded weights are returned: the host keeps them as the reference of the
  update;
* `encode_update(round, u0..uN) -> seed, t<i>_<entry>...`: encodes an
  update u = received - trained weights (TFF's model-delta convention; the
  host subtracts, and sends zeros with weight 0 if u is not finite, as
  TFF's client work does) with the uplink codec and the seed
  `prng.update_seed(u, config seed, round)`, exactly what the simulation's
  `EncodedMeanFactory` sends.

The update is an input rather than computed from variables in the graph:
TFLite 2.14 miscomputed element-wise ops on tensors read from resource
variables in this signature (NaNs/garbage next to signatures that assign
the variables), while graphs fed by signature inputs, like the broadcast
decode, are exact.

The local optimizer is TFF's `build_sgdm`: a = m a + g, w -= lr a (plain
SGD when m = 0), with the accumulator reset by `restore`/`load_broadcast`,
as TFF's client work starts each round with a fresh optimizer state. The
accumulators hold lr a, and the gradients come out of the backward pass
already scaled by lr (it enters once, at dL/dlogits), so the update costs
a multiplication, an addition and a subtraction per weight (plain SGD: one
subtraction) besides the variable reads and writes.

Gradients come from the explicit builtin-op backward passes of
`layers.py`. If the model has a layer without one, `build_trainer` can fall
back to `tf.GradientTape` (Flex ops) and says so: `Trainer.uses_flex`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from mobile_export import layers as layers_lib
from tff_compress.encoders import prng
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
  """What the trainer needs from a run's config.

  Attributes:
    batch_size: The run's batch size (`client.batch_size`): the batches a
      device client cuts its data into. `train` itself takes any number of
      rows.
    learning_rate: Local SGD step size (`client.learning_rate`).
    momentum: Local SGD momentum (`client.momentum`; 0 = plain SGD).
    broadcast: Server->client codec (`broadcast.*`).
    uplink: Client->server codec (`uplink.*`).
    seed: The config seed (enters the uplink seed).
  """

  batch_size: int
  learning_rate: float
  momentum: float
  broadcast: codec_settings.CodecSettings
  uplink: codec_settings.CodecSettings
  seed: int

  @classmethod
  def of(cls, settings) -> 'TrainerSettings':
    """From a run's settings (`config_lib.Settings`)."""
    return cls(
        batch_size=int(settings.client.batch_size),
        learning_rate=float(settings.client.learning_rate),
        momentum=float(settings.client.momentum),
        broadcast=settings.broadcast, uplink=settings.uplink,
        seed=int(settings.run.seed))


def entry_name(tensor_index: int, key: str) -> str:
  """Signature tensor name of one payload entry ('quantize/min' -> ...)."""
  return f't{tensor_index}_{key.replace("/", "_")}'


def model_value_type(shapes: Sequence[Sequence[int]]):
  """The TFF type the codecs see: a list of float32 tensors.

  The simulation encodes `ModelWeights` (trainable, then the empty
  non-trainable list) or the trainable list; both flatten to these tensors
  in this order, so each tensor gets the same chain and seed index.
  """
  return tff.types.StructWithPythonType(
      [tff.TensorType(np.float32, tuple(s)) for s in shapes], list)


class Trainer(tf.Module):
  """Variables and signature functions of the on-device trainer."""

  def __init__(self, network: layers_lib.Network,
               weights: Sequence[np.ndarray], settings: TrainerSettings,
               keras_model: Optional[tf.keras.Model] = None):
    """Builds the trainer.

    Args:
      network: The layer description (`layers.network_from_keras`), or
        None to train `keras_model` with `tf.GradientTape` (needs Flex).
      weights: Initial weights, Keras order (e.g. a run's final weights).
      settings: Batch size, optimizer and codecs.
      keras_model: Only for the tape fallback.
    """
    super().__init__(name='trainer')
    if network is None and keras_model is None:
      raise ValueError('need a network or a Keras model')
    self._network = network
    self._keras = keras_model
    self.settings = settings
    self.weight_shapes = [tuple(int(d) for d in w.shape) for w in weights]
    self.input_shape = (network.input_shape if network is not None else
                        tuple(int(d) for d in keras_model.input_shape[1:]))
    self.num_classes = (network.num_classes if network is not None else
                        int(keras_model.output_shape[-1]))
    self.uses_flex = network is None
    if keras_model is not None and network is None:
      self.weights = list(keras_model.trainable_variables)
      for v, w in zip(self.weights, weights):
        v.assign(w)
    else:
      self.weights = [tf.Variable(w, name=f'w{i}')
                      for i, w in enumerate(weights)]
    # The SGDM state starts from the same arrays as the weights, which the
    # converter stores once (identical constants are shared), so
    # trainer.tflite holds the weights once, not twice. The accumulators'
    # content is ignored until the first step of a round (`momentum_on` = 0
    # then), so they need no stored zeros and no zeroing pass. (Variables of
    # unspecified shape would avoid the copy too, but crash XNNPACK in
    # ai-edge-litert.)
    self.accumulators = ([tf.Variable(w, name=f'accum{i}')
                          for i, w in enumerate(weights)]
                         if settings.momentum else [])
    self.momentum_on = tf.Variable(0.0, name='momentum_on')
    self.broadcast_coder = structure.StructureCodec(
        model_value_type(self.weight_shapes), settings.broadcast)
    self.uplink_coder = structure.StructureCodec(
        model_value_type(self.weight_shapes), settings.uplink)

  # ---- specs ----

  def broadcast_inputs(self) -> 'collections.OrderedDict[str, tf.TensorSpec]':
    """Input specs of `load_broadcast`, in payload order."""
    specs = collections.OrderedDict(round=tf.TensorSpec([], tf.int64, 'round'))
    if not self.settings.broadcast.is_identity:
      specs['seed'] = tf.TensorSpec([2], tf.int64, 'seed')
    for i, spec in enumerate(self.broadcast_coder.specs()):
      for key, (dtype, count) in spec.items():
        name = entry_name(i, key)
        specs[name] = tf.TensorSpec([count], tf.as_dtype(dtype), name)
    return specs

  def update_outputs(self) -> list[tuple[str, int, str, np.dtype, int]]:
    """(name, tensor index, entry, dtype, count) of `encode_update`."""
    out = []
    for i, spec in enumerate(self.uplink_coder.specs()):
      for key, (dtype, count) in spec.items():
        out.append((entry_name(i, key), i, key, np.dtype(dtype), count))
    return out

  # ---- the computations ----

  def _loss_and_steps(self, x, y, weights):
    """(loss, lr * dL/dW): the learning rate enters once, at dL/dlogits."""
    lr = self.settings.learning_rate
    if self._network is not None:
      return self._network.loss_and_grads(x, y, weights, grad_scale=lr)
    with tf.GradientTape() as tape:
      logits = self._keras(x, training=True)
      valid = tf.cast(y >= 0, tf.float32)
      per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(
          tf.maximum(y, 0), logits)
      loss = tf.reduce_sum(per_row * valid) / tf.maximum(
          tf.reduce_sum(valid), 1.0)
    return loss, [lr * g for g in tape.gradient(loss, self.weights)]

  def train_step(self, x, y):
    """One SGD(M) step on the rows of x; the mean loss of the valid rows.

    TFF's SGDM (a = m a + g, w -= lr a) with the accumulators holding lr a
    (constant lr): lr a = m (lr a) + lr g, w -= lr a.
    """
    weights = [v.read_value() for v in self.weights]
    loss, steps = self._loss_and_steps(x, y, weights)
    if self.settings.momentum:
      # lr a <- m (lr a) + lr g, with a = 0 before the round's first step.
      m = tf.constant(self.settings.momentum, tf.float32) * self.momentum_on
      for v, w, a, step in zip(self.weights, weights, self.accumulators,
                               steps):
        new_a = m * a + step
        a.assign(new_a)
        v.assign(w - new_a)
      self.momentum_on.assign(1.0)
    else:
      for v, w, step in zip(self.weights, weights, steps):
        v.assign(w - step)
    return loss

  def logits(self, x):
    if self._network is not None:
      return self._network.logits(x, [v.read_value() for v in self.weights])
    return self._keras(x, training=False)

  def _start_round(self, values):
    for v, t in zip(self.weights, values):
      v.assign(t)
    self.momentum_on.assign(0.0)

  def load_broadcast(self, payload: dict):
    """Decodes the broadcast entries (see `broadcast_inputs`) and loads them."""
    encoded_list = []
    for i, spec in enumerate(self.broadcast_coder.specs()):
      entries = collections.OrderedDict(
          (key, payload[entry_name(i, key)]) for key in spec)
      if 'raw' in entries:  # sent flat, like every entry
        entries['raw'] = tf.reshape(entries['raw'], self.weight_shapes[i])
      encoded_list.append(entries)
    seed = payload.get('seed', tf.zeros([2], tf.int64))
    values = tf.nest.flatten(self.broadcast_coder.decode(encoded_list, seed))
    self._start_round(values)
    return values

  def encode_update(self, round_num, deltas):
    """The uplink payload of update `deltas` in round `round_num`."""
    if self.settings.uplink.is_identity:
      seed = tf.stack([tf.constant(0, tf.int64), round_num])
    else:
      seed = prng.update_seed(deltas, self.settings.seed, round_num)
    payload = self.uplink_coder.encode(deltas, seed)
    out = collections.OrderedDict(seed=seed)
    for i, entries in enumerate(payload):
      for key, t in entries.items():
        out[entry_name(i, key)] = tf.reshape(t, [-1])
    return out

  # ---- signatures ----

  def signatures(self) -> dict:
    """Concrete functions keyed by signature name."""
    n = len(self.weights)
    param_specs = {f'a{i}': tf.TensorSpec(s, tf.float32, f'a{i}')
                   for i, s in enumerate(self.weight_shapes)}

    @tf.function(input_signature=[
        tf.TensorSpec([None, *self.input_shape], tf.float32, 'x'),
        tf.TensorSpec([None], tf.int32, 'y')])
    def train(x, y):
      return {'loss': self.train_step(x, y)}

    @tf.function(input_signature=[
        tf.TensorSpec([None, *self.input_shape], tf.float32, 'x')])
    def infer(x):
      return {'logits': self.logits(x)}

    @tf.function(input_signature=[])
    def parameters():
      return {f'a{i}': self.weights[i].read_value() for i in range(n)}

    update_specs = {f'u{i}': tf.TensorSpec(s, tf.float32, f'u{i}')
                    for i, s in enumerate(self.weight_shapes)}

    @tf.function
    def restore(**kwargs):
      self._start_round([kwargs[f'a{i}'] for i in range(n)])
      return {f'a{i}': tf.identity(kwargs[f'a{i}']) for i in range(n)}

    @tf.function
    def load_broadcast(**kwargs):
      values = self.load_broadcast(kwargs)
      return {f'a{i}': tf.identity(v) for i, v in enumerate(values)}

    @tf.function
    def encode_update(**kwargs):
      return self.encode_update(kwargs['round'],
                                [kwargs[f'u{i}'] for i in range(n)])

    return {
        'train': train.get_concrete_function(),
        'infer': infer.get_concrete_function(),
        'parameters': parameters.get_concrete_function(),
        'restore': restore.get_concrete_function(**param_specs),
        'load_broadcast': load_broadcast.get_concrete_function(
            **self.broadcast_inputs()),
        'encode_update': encode_update.get_concrete_function(
            round=tf.TensorSpec([], tf.int64, 'round'), **update_specs),
    }


def build_trainer(keras_model: tf.keras.Model,
                  weights: Sequence[np.ndarray],
                  settings: TrainerSettings,
                  allow_flex: bool = False) -> Trainer:
  """A builtin-only trainer, or (allow_flex) a tape-based one if needed.

  Raises:
    layers_lib.UnsupportedLayerError: a layer has no builtin backward pass
      and `allow_flex` is False.
  """
  try:
    network = layers_lib.network_from_keras(keras_model)
  except layers_lib.UnsupportedLayerError:
    if not allow_flex:
      raise
    return Trainer(None, weights, settings, keras_model=keras_model)
  return Trainer(network, weights, settings)

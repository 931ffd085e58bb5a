"""FedGKT's round and evaluation as TFF computations.

One round (He et al. 2020, Algorithm 1), for the sampled clients:

1. **client work** (`federated_map` at CLIENTS): each client trains its own
   edge model (it never leaves the device) for E epochs on
   CE + alpha * KD_T(server logits -> edge logits), looking up the server
   logits of each sample by its stable id (row of the client's arrays);
   then, in inference mode and in id order, extracts each sample's feature
   map (the stem's output) and logits.
2. **upload**: features (float32, or q-bit encoded by `codec.FeatureCodec`),
   edge logits (float32) and labels (int32) of every local sample, plus the
   client's key (int32). ``bytes_up`` is `tensor_bytes` of exactly that
   structure, summed over clients. The payload is decoded at CLIENTS and the
   rows are gathered at the SERVER with `federated_aggregate` (concat).
3. **server work** (`federated_map` at SERVER): the server model trains for
   its epochs on the gathered feature maps with CE + beta *
   KD_T(client logits -> server logits), then computes its logits for every
   gathered row in inference mode.
4. **download** (`federated_select`): each client receives the server
   logits of its own rows, selected by its key (TFF's per-client
   server-to-client intrinsic); ``bytes_down`` is their size, summed over
   clients. The client stores them, keyed by sample id, for its next round.

Per-client state (edge weights, the client's optimizer state, the stored
server logits and a mask of which samples have them) is a CLIENTS-placed
input and output of the round: the program keeps it between a client's
rounds and checkpoints it, like any stateful-client TFF simulation.

Evaluation: each evaluation client featurizes its shard of the test split
with the edge model of one training client (the deployed pipeline: that
device's stem, the same feature codec, the server model), and the server
model predicts; the edge model's own accuracy is reported beside it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.gkt import codec as codec_lib
from tff_compress.gkt import settings as gkt_settings
from tff_compress.gkt import training
from tff_compress.models import flops
from tff_compress.models import resnet

_PREDICT_BATCH = 256

SERVER_DEPTHS = gkt_settings.SERVER_DEPTHS
# Config `gkt.edge_model` -> bottleneck blocks after the stem.
EDGE_MODELS = dict(resnet.EDGE_BLOCKS)


@dataclasses.dataclass(frozen=True)
class GktSpec:
  """Everything the computations depend on (from the settings and the data).

  Attributes:
    input_shape: Image shape (H, W, C).
    num_classes: Number of classes K.
    depth: Depth of the whole network the server completes (9 n + 2).
    edge_blocks: Bottleneck blocks of the edge model after its stem.
    client: Edge training (epochs, batch, alpha, T, weight decay).
    server: Server training (epochs, batch, beta, T, weight decay).
    client_optimizer: Key of `training.OPTIMIZERS` for the edge model.
    client_learning_rate: Its learning rate.
    server_optimizer: Key of `training.OPTIMIZERS` for the server model.
    server_learning_rate: Its learning rate.
    bits: Feature quantization bits (32 = float32).
    quantizer: Feature quantizer, 'uniform' or 'eden' (`codec.py`).
    num_clients: Number of training clients (keys are 0..num_clients-1).
    seed: Model initialization seed.
  """

  input_shape: tuple[int, ...]
  num_classes: int
  depth: int
  edge_blocks: int
  client: training.TrainSpec
  server: training.TrainSpec
  client_optimizer: str
  client_learning_rate: float
  server_optimizer: str
  server_learning_rate: float
  bits: int
  num_clients: int
  seed: int
  quantizer: str = 'uniform'

  @classmethod
  def create(cls, g: gkt_settings.GktSettings, *, model_name: str,
             epochs: int, batch_size: int, input_shape: Sequence[int],
             num_classes: int, num_clients: int, seed: int) -> 'GktSpec':
    """The spec of a run: `gkt.*`, the server's model, the client's local
    epochs and batch size, the data's shapes and the config seed."""
    return cls(
        input_shape=tuple(int(d) for d in input_shape),
        num_classes=int(num_classes),
        depth=SERVER_DEPTHS[model_name],
        edge_blocks=EDGE_MODELS[g.edge_model],
        client=training.TrainSpec(
            epochs=epochs, batch_size=batch_size,
            kd_weight=g.alpha, temperature=g.temperature,
            weight_decay=g.weight_decay),
        server=training.TrainSpec(
            epochs=g.server_epochs, batch_size=g.server_batch_size,
            kd_weight=g.beta, temperature=g.temperature,
            weight_decay=g.weight_decay),
        client_optimizer=g.client_optimizer,
        client_learning_rate=g.client_learning_rate,
        server_optimizer=g.server_optimizer,
        server_learning_rate=g.server_learning_rate,
        bits=g.bits,
        num_clients=int(num_clients),
        seed=int(seed),
        quantizer=g.quantizer)

  @property
  def feature_shape(self) -> tuple[int, int, int]:
    return resnet.feature_shape(self.input_shape)

  def edge_model(self) -> tf.keras.Model:
    """Input -> [logits, feature map]."""
    return resnet.build_edge_model(self.input_shape, self.num_classes,
                                   self.edge_blocks, seed=self.seed)

  def server_model(self) -> tf.keras.Model:
    """Feature map -> logits."""
    return resnet.build_server_model(self.input_shape, self.num_classes,
                                     self.depth, seed=self.seed)

  def whole_model(self) -> tf.keras.Model:
    """Stem + server body: the network FedAvg would train on devices."""
    return resnet.build_resnet(self.input_shape, self.num_classes,
                               self.depth, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class ModelReport:
  """Parameter and FLOP counts per example (see `models/flops.py`)."""

  edge_params: int
  edge_forward_flops: int
  edge_train_flops: int
  server_params: int
  server_train_flops: int
  whole_params: int
  whole_train_flops: int

  @property
  def param_ratio(self) -> float:
    """Whole-network (FedAvg model) parameters per edge parameter."""
    return self.whole_params / self.edge_params

  @property
  def flop_ratio(self) -> float:
    """Training FLOPs per example, whole network / edge model."""
    return self.whole_train_flops / self.edge_train_flops

  def client_round_flops(self, num_examples: int, epochs: int) -> float:
    """Edge FLOPs of one client round: E epochs of training + extraction."""
    return num_examples * (epochs * self.edge_train_flops +
                           self.edge_forward_flops)


def model_report(settings: GktSpec) -> ModelReport:
  edge = resnet.build_edge_classifier(
      settings.input_shape, settings.num_classes, settings.edge_blocks)
  server = settings.server_model()
  whole = settings.whole_model()
  return ModelReport(
      edge_params=flops.count_params(edge),
      edge_forward_flops=flops.forward_flops_per_example(edge),
      edge_train_flops=flops.training_flops_per_example(edge),
      server_params=flops.count_params(server),
      server_train_flops=flops.training_flops_per_example(server),
      whole_params=flops.count_params(whole),
      whole_train_flops=flops.training_flops_per_example(whole))


def _empty_rows(settings: GktSpec):
  """Zero rows typed with an unknown row count (the gather's accumulator)."""
  k = settings.num_classes

  def empty(shape, dtype):
    return tf.compat.v1.placeholder_with_default(
        tf.zeros([0, *shape], dtype), [None, *shape])

  return collections.OrderedDict(
      key=empty([], tf.int32),
      features=empty(settings.feature_shape, tf.float32),
      logits=empty([k], tf.float32),
      labels=empty([], tf.int32))


def _concat(a, b):
  return tf.nest.map_structure(lambda x, y: tf.concat([x, y], 0), a, b)


@dataclasses.dataclass(frozen=True)
class GktProcess:
  """The TFF computations of FedGKT.

  Attributes:
    initialize_server: `( -> server_state)`; server_state is OrderedDict(
      weights=OrderedDict(trainable, non_trainable), opt_state).
    initialize_client: `( -> OrderedDict(weights, opt_state))` of a new
      edge model (every client starts from the same one).
    next: `(server_state@SERVER, server_seed@SERVER, client_inputs@CLIENTS)
      -> <server_state@SERVER, client_states@CLIENTS, metrics@SERVER>`.
    evaluate: `(server_weights@SERVER, eval_inputs@CLIENTS) ->
      metrics@SERVER`.
    client_state_type: TFF type of one client's state.
    settings: The settings they were built from.
  """

  initialize_server: tff.Computation
  initialize_client: tff.Computation
  next: tff.Computation
  evaluate: tff.Computation
  client_state_type: tff.Type
  settings: GktSpec


def build_gkt_process(settings: GktSpec) -> GktProcess:
  """Builds FedGKT's computations for `settings` (see the module doc)."""
  s = settings
  codec = codec_lib.FeatureCodec(s.feature_shape, s.bits, s.quantizer)
  client_opt = training.OPTIMIZERS[s.client_optimizer](s.client_learning_rate)
  server_opt = training.OPTIMIZERS[s.server_optimizer](s.server_learning_rate)
  k = s.num_classes

  def initial_state(model_fn, optimizer):
    model = model_fn()
    weights = training.model_weights(model)
    specs = [tf.TensorSpec(v.shape, v.dtype) for v in weights['trainable']]
    return collections.OrderedDict(
        weights=training.read_weights(model),
        opt_state=optimizer.initialize(specs))

  @tff.tensorflow.computation
  def initialize_server():
    return initial_state(s.server_model, server_opt)

  @tff.tensorflow.computation
  def initialize_client():
    return initial_state(s.edge_model, client_opt)

  edge_type = initialize_client.type_signature.result
  server_state_type = initialize_server.type_signature.result
  client_state_type = tff.to_type(collections.OrderedDict(
      weights=edge_type.weights,
      opt_state=edge_type.opt_state,
      teacher=tff.TensorType(np.float32, [None, k]),
      teacher_mask=tff.TensorType(np.float32, [None])))
  x_type = tff.TensorType(np.float32, [None, *s.input_shape])
  y_type = tff.TensorType(np.int32, [None])
  seed_type = tff.TensorType(np.int64, [2])
  client_input_type = tff.to_type(collections.OrderedDict(
      key=np.int32, seed=seed_type, x=x_type, y=y_type,
      state=client_state_type))

  # ---- client work and upload ----

  @tf.function
  def client_step(model, inp):
    state = inp['state']
    training.assign_weights(model, state['weights'])
    opt_state, metrics = training.train(
        model, client_opt, state['opt_state'], inp['x'], inp['y'],
        state['teacher'], state['teacher_mask'], s.client,
        tf.random.experimental.stateless_fold_in(inp['seed'], 0))
    logits, features = training.predict(model, inp['x'], _PREDICT_BATCH)
    message = codec.encode(
        features, tf.random.experimental.stateless_fold_in(inp['seed'], 1))
    upload = collections.OrderedDict(
        key=inp['key'], features=message, logits=logits, labels=inp['y'])
    sent = collections.OrderedDict(
        total=chain_lib.payload_bytes(upload),
        features=chain_lib.payload_bytes(message),
        logits=chain_lib.payload_bytes(logits),
        labels=chain_lib.payload_bytes(inp['y']))
    kept = collections.OrderedDict(
        weights=training.read_weights(model), opt_state=opt_state)
    return collections.OrderedDict(
        kept=kept, upload=upload, metrics=metrics, bytes_up=sent)

  @tff.tensorflow.computation(client_input_type)
  def client_update(inp):
    return client_step(s.edge_model(), inp)

  client_output_type = client_update.type_signature.result
  upload_type = client_output_type.upload

  @tff.tensorflow.computation(upload_type)
  def unpack(upload):
    n = tf.shape(upload['labels'])[0]
    return collections.OrderedDict(
        key=tf.fill([n], upload['key']),
        features=codec.decode(upload['features']),
        logits=upload['logits'], labels=upload['labels'])

  @tff.tensorflow.computation
  def empty_rows():
    return _empty_rows(s)

  rows_type = empty_rows.type_signature.result

  @tff.tensorflow.computation(rows_type, unpack.type_signature.result)
  def accumulate(acc, rows):
    return _concat(acc, rows)

  @tff.tensorflow.computation(rows_type, rows_type)
  def merge(a, b):
    return _concat(a, b)

  @tff.tensorflow.computation(rows_type)
  def report(acc):
    return acc

  def gather(rows_at_clients):
    return tff.federated_aggregate(rows_at_clients, empty_rows(), accumulate,
                                   merge, report)

  # ---- server work ----

  @tf.function
  def server_step(model, state, rows, seed):
    training.assign_weights(model, state['weights'])
    n = tf.shape(rows['labels'])[0]
    opt_state, metrics = training.train(
        model, server_opt, state['opt_state'], rows['features'],
        rows['labels'], rows['logits'], tf.ones([n], tf.float32), s.server,
        seed)
    logits = training.predict(model, rows['features'], _PREDICT_BATCH)[0]
    new_state = collections.OrderedDict(
        weights=training.read_weights(model), opt_state=opt_state)
    table = collections.OrderedDict(key=rows['key'], logits=logits)
    return collections.OrderedDict(
        state=new_state, table=table, metrics=metrics)

  @tff.tensorflow.computation(server_state_type, rows_type, seed_type)
  def server_update(state, rows, seed):
    return server_step(s.server_model(), state, rows, seed)

  table_type = server_update.type_signature.result.table

  # ---- per-client download ----

  @tff.tensorflow.computation(table_type, np.int32)
  def select_logits(table, key):
    return tf.boolean_mask(table['logits'], tf.equal(table['key'], key))

  @tff.tensorflow.computation(client_input_type)
  def key_of(inp):
    return tf.reshape(inp['key'], [1])

  @tff.tensorflow.computation(
      client_output_type.kept,
      tff.SequenceType(tff.TensorType(np.float32, [None, k])))
  def finish_client(kept, received):
    empty = tf.compat.v1.placeholder_with_default(
        tf.zeros([0, k], tf.float32), [None, k])
    logits = received.reduce(empty, lambda a, b: tf.concat([a, b], 0))
    state = collections.OrderedDict(
        weights=kept['weights'], opt_state=kept['opt_state'],
        teacher=logits,
        teacher_mask=tf.ones([tf.shape(logits)[0]], tf.float32))
    return collections.OrderedDict(
        state=state, bytes_down=chain_lib.payload_bytes(logits))

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(seed_type, tff.SERVER),
      tff.FederatedType(client_input_type, tff.CLIENTS))
  def next_fn(server_state, server_seed, client_inputs):
    out = tff.federated_map(client_update, client_inputs)
    rows = gather(tff.federated_map(unpack, out.upload))
    server_out = tff.federated_map(server_update,
                                   (server_state, rows, server_seed))
    received = tff.federated_select(
        tff.federated_map(key_of, client_inputs),
        tff.federated_value(np.int32(s.num_clients - 1), tff.SERVER),
        server_out.table, select_logits)
    finished = tff.federated_map(finish_client, (out.kept, received))
    metrics = tff.federated_zip(collections.OrderedDict(
        edge=tff.federated_sum(out.metrics),
        server=server_out.metrics,
        bytes_up=tff.federated_sum(out.bytes_up),
        bytes_down=tff.federated_sum(finished.bytes_down)))
    return server_out.state, finished.state, metrics

  # ---- evaluation ----

  eval_input_type = tff.to_type(collections.OrderedDict(
      key=np.int32, seed=seed_type, x=x_type, y=y_type,
      weights=edge_type.weights))

  @tf.function
  def eval_client_step(model, inp):
    training.assign_weights(model, inp['weights'])
    logits, features = training.predict(model, inp['x'], _PREDICT_BATCH)
    upload = collections.OrderedDict(
        key=inp['key'], features=codec.encode(features, inp['seed']),
        logits=logits, labels=inp['y'])
    return collections.OrderedDict(
        upload=upload, edge=training.evaluate(logits, inp['y']))

  @tff.tensorflow.computation(eval_input_type)
  def eval_client(inp):
    return eval_client_step(s.edge_model(), inp)

  @tf.function
  def eval_server_step(model, weights, rows):
    training.assign_weights(model, weights)
    logits = training.predict(model, rows['features'], _PREDICT_BATCH)[0]
    return training.evaluate(logits, rows['labels'])

  @tff.tensorflow.computation(server_state_type.weights, rows_type)
  def eval_server(weights, rows):
    return eval_server_step(s.server_model(), weights, rows)

  # `unpack` is typed for training uploads; evaluation uploads share it.
  if eval_client.type_signature.result.upload != upload_type:
    raise AssertionError('evaluation and training uploads differ in type')

  @tff.federated_computation(
      tff.FederatedType(server_state_type.weights, tff.SERVER),
      tff.FederatedType(eval_input_type, tff.CLIENTS))
  def evaluate(server_weights, eval_inputs):
    out = tff.federated_map(eval_client, eval_inputs)
    rows = gather(tff.federated_map(unpack, out.upload))
    return tff.federated_zip(collections.OrderedDict(
        server=tff.federated_map(eval_server, (server_weights, rows)),
        edge=tff.federated_sum(out.edge)))

  return GktProcess(
      initialize_server=initialize_server,
      initialize_client=initialize_client,
      next=next_fn,
      evaluate=evaluate,
      client_state_type=client_state_type,
      settings=settings)


def initial_client_state(edge: dict, num_examples: int,
                         num_classes: int) -> collections.OrderedDict:
  """A client's state before its first round: no server logits yet."""
  return collections.OrderedDict(
      weights=edge['weights'], opt_state=edge['opt_state'],
      teacher=np.zeros([num_examples, num_classes], np.float32),
      teacher_mask=np.zeros([num_examples], np.float32))

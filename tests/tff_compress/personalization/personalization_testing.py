"""Shared fixtures of the personalization tests."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow_federated as tff

from tff_compress.data import federated_data
from tff_compress.data import registry as data_registry


def fake_data(sizes, shape=(28, 28, 1), labels_per_client=3,
              seed=0) -> federated_data.FederatedData:
  """Clients of random images; client i has sizes[i] examples of a few
  labels; pixel [0, 0, 0] holds a unique example id / 10,000."""
  rng = np.random.default_rng(seed)
  clients, next_id = {}, 0
  for i, n in enumerate(sizes):
    x = rng.random((n,) + tuple(shape), dtype=np.float32)
    x[:, 0, 0, 0] = (next_id + np.arange(n)) / 10_000
    next_id += n
    y = rng.choice(rng.choice(10, labels_per_client, replace=False),
                   n).astype(np.int32)
    clients[data_registry.client_id(i, len(sizes))] = (x, y)
  ids = tuple(sorted(clients))
  return federated_data.FederatedData(
      name='fake', input_shape=tuple(shape), num_classes=10, client_ids=ids,
      get_client=clients.__getitem__,
      test_x=np.zeros((1,) + tuple(shape), np.float32),
      test_y=np.zeros((1,), np.int32),
      client_sizes={c: len(v[1]) for c, v in clients.items()})


def finetune_batches(x, y, p, shuffle_seed: int) -> list:
  """(x, y) batches a client fine-tunes on, in order: `p.epochs` seeded
  passes cut into `p.batch_size` batches, as the simulation's loader."""
  ds = federated_data.make_client_dataset(
      x, y, batch_size=p.batch_size, epochs=p.epochs,
      shuffle_seed=shuffle_seed)
  return [(b['x'], b['y']) for b in ds]


def _tensor_shapes(t) -> set:
  """Shapes of the tensors in a TFF type (sequence elements included)."""
  if isinstance(t, tff.TensorType):
    return {tuple(t.shape)}
  if isinstance(t, tff.FederatedType):
    return _tensor_shapes(t.member)
  if isinstance(t, tff.SequenceType):
    return _tensor_shapes(t.element)
  if isinstance(t, tff.StructType):
    return set().union(*[_tensor_shapes(c) for c in t.children()]) if len(
        t) else set()
  return set()  # function types: computations, not data


def _placements(t) -> set:
  if isinstance(t, tff.FederatedType):
    return {t.placement}
  if isinstance(t, tff.StructType):
    return set().union(*[_placements(c) for c in t.children()]) if len(
        t) else set()
  return set()


def moved_tensor_shapes(comp: tff.Computation) -> dict:
  """{intrinsic uri: shapes it moves} over every intrinsic in `comp` whose
  result lies at another placement than one of its federated arguments
  (broadcasts, selects, sums, aggregates, means, secure sums)."""
  moved = collections.defaultdict(set)

  def visit(block):
    if isinstance(block, tff.framework.Intrinsic):
      sig = block.type_signature
      if isinstance(sig, tff.FunctionType) and sig.parameter is not None:
        params = sig.parameter
        args = params.children() if isinstance(params, tff.StructType) else [
            params]
        for arg in args:
          if isinstance(arg, tff.FederatedType) and (
              _placements(sig.result) - {arg.placement}):
            moved[block.uri] |= _tensor_shapes(arg)
    return block, False

  tff.framework.transform_postorder(comp.to_building_block(), visit)
  return moved



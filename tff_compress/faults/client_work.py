"""A client work that replaces updates by poisoned ones, after local training.

`build_fault_injecting_client_work(inner, huge_norm)` wraps any
`ClientWorkProcess`. Its client data is ``OrderedDict(fault=<dataset of one
int32 code>, data=<the inner client work's data>)`` (`ClientWorkProcess`
accepts only sequences or structures of sequences, so the code travels as a
one-element dataset). Each client runs the inner client work unchanged,
then, by its code (`schedule.OK/NAN/HUGE`):

* `OK`: the update is left as it is;
* `NAN`: the first entry of every update tensor becomes NaN (a partial
  corruption: the update's L2 norm is NaN, its other entries are finite);
* `HUGE`: the update is rescaled to L2 norm `huge_norm`: ``Δ · h / ‖Δ‖₂``
  (a constant vector of that norm if Δ = 0).

The weight is left as the inner work reported it. Injecting after training
matters: TFF's model-delta client work already zeroes a non-finite update
and gives it weight 0, so corrupting the *data* would never reach the
aggregator; here the aggregator's zeroing stage has to catch it.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.faults import schedule

_CODE_TYPE = tff.SequenceType(tff.TensorType(np.int32))


def poison(update, code: tf.Tensor, huge_norm: float):
  """`update` corrupted per `code` (see the module docstring)."""
  flat = tf.nest.flatten(update)

  def with_nan():
    out = []
    for t in flat:
      first = tf.reshape(tf.one_hot(0, tf.size(t), dtype=t.dtype), tf.shape(t))
      out.append(tf.where(first > 0, tf.constant(np.nan, t.dtype), t))
    return out

  def with_huge_norm():
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in flat]))
    size = tf.cast(sum(int(np.prod(t.shape)) for t in flat), tf.float32)
    # Δ = 0 has no direction: use the constant vector of norm h instead.
    return tf.cond(
        norm > 0,
        lambda: [t * (huge_norm / norm) for t in flat],
        lambda: [tf.fill(tf.shape(t), huge_norm / tf.sqrt(size))
                 for t in flat])

  out = tf.switch_case(
      code, [lambda: list(flat), with_nan, with_huge_norm])
  return tf.nest.pack_sequence_as(update, out)


def build_fault_injecting_client_work(
    inner: tff.learning.templates.ClientWorkProcess,
    huge_norm: float) -> tff.learning.templates.ClientWorkProcess:
  """`inner`, with each client's update replaced per its fault code.

  Args:
    inner: Any `ClientWorkProcess` (model-delta SGD, DP-SGD, ...).
    huge_norm: L2 norm of a `HUGE` update.

  Returns:
    A `ClientWorkProcess` with the state, measurements and hparams of
    `inner`, taking ``OrderedDict(fault=code dataset, data=inner data)``.
  """
  if not huge_norm > 0:
    raise ValueError(f'huge_norm must be > 0, got {huge_norm}')
  huge_norm = float(huge_norm)
  next_type = inner.next.type_signature
  state_type = next_type.parameter[0]
  weights_type = next_type.parameter[1]
  data_type = next_type.parameter[2].member
  result_type = next_type.result.result.member
  client_data_type = tff.StructType([('fault', _CODE_TYPE),
                                     ('data', data_type)])

  @tff.tensorflow.computation(result_type, _CODE_TYPE)
  def apply_fault(result, codes):
    code = codes.reduce(tf.constant(schedule.OK, tf.int32),
                        lambda _, c: c)
    return tff.learning.templates.ClientResult(
        update=poison(result.update, code, huge_norm),
        update_weight=result.update_weight)

  @tff.federated_computation(
      state_type, weights_type,
      tff.FederatedType(client_data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    out = inner.next(state, weights, client_data.data)
    result = tff.federated_map(apply_fault, (out.result, client_data.fault))
    return tff.templates.MeasuredProcessOutput(
        state=out.state, result=result, measurements=out.measurements)

  return tff.learning.templates.ClientWorkProcess(
      inner.initialize, next_fn, get_hparams_fn=inner.get_hparams,
      set_hparams_fn=inner.set_hparams)


def client_data(datasets: Sequence, codes: Sequence[int]) -> list:
  """Per-client data of the wrapped work: each dataset with its fault code."""
  if len(datasets) != len(codes):
    raise ValueError(f'{len(datasets)} datasets but {len(codes)} fault codes')
  return [collections.OrderedDict(
      fault=tf.data.Dataset.from_tensors(np.int32(code)), data=ds)
          for ds, code in zip(datasets, codes)]

"""A round counter, the state of every piece that seeds by round.

The encoded broadcast, the encoded uplink, the DP record encoder and the
keyed (per-client submodel) pieces each keep their own int64 counter in
their state, so each piece is a self-contained TFF process that also works
inside TFF's own builders. A round whose server state is discarded (a
skipped round under client faults) discards the counters with it, so every
counter stays equal to the number of applied rounds plus its start.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


class RoundCounter:
  """TFF computations of an int64 counter starting at `start`.

  Attributes:
    initial: `( -> int64)` tensorflow computation returning `start`.
    increment: `(int64 -> int64)` tensorflow computation adding 1.
  """

  def __init__(self, start: int = 0):
    self.start = int(start)

    @tff.tensorflow.computation
    def initial():
      return tf.constant(start, tf.int64)

    @tff.tensorflow.computation(np.int64)
    def increment(round_num):
      return round_num + 1

    self.initial = initial
    self.increment = increment

  def initialize_at_server(self):
    """The counter's initial value placed at SERVER (inside a federated
    computation)."""
    return tff.federated_eval(self.initial, tff.SERVER)

  def next_at_server(self, value):
    """`value + 1` for a SERVER-placed counter (inside a federated
    computation)."""
    return tff.federated_map(self.increment, value)

"""Each client's own train/held-out split, and who evaluates personalization.

A phone that evaluates a personalized model scores it on examples it did
not train on. So, when personalization is evaluated (or FedPer trains),
every client's examples are split once into a *train part* — the only
examples federated training and local fine-tuning ever see — and a
*held-out part* that the client uses only to score models on its own side.

The split is stratified by label and seeded by (config seed, client index)
only: the client's examples are ordered by label, randomly within a label,
and every position i with ``floor((i + 1) f + 1/2) > floor(i f + 1/2)``
(f = `test_fraction`) is held out. That is systematic sampling along the
label-sorted order, so each label contributes ``f · n_label`` held-out
examples to within one, and ``round(f · n)`` are held out in total.

Random streams (numpy SeedSequence entropy; program/sampling.py lists the
others): ``[seed, 0, 3, 0, client]`` orders a client's examples,
``[seed, 0, 3, 1]`` samples the evaluation clients, ``[seed, round, 3, 2,
client]`` seeds a client's fine-tuning data order in a round. Round 0
never occurs in training (rounds count from 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tff_compress.data import federated_data

STREAM = 3  # after sampling 0, shuffling 1, faults 2 (program/sampling.py)
_SPLIT, _EVAL_CLIENTS, _FINETUNE = 0, 1, 2


def held_out_mask(labels: np.ndarray, fraction: float, seed: int,
                  client_index: int) -> np.ndarray:
  """Boolean [n]: True for the examples client `client_index` holds out.

  Args:
    labels: The client's int labels, [n].
    fraction: The held-out share f, in (0, 1).
    seed: The config seed.
    client_index: The client's index in the data set.

  Returns:
    A mask with ``round(f · n)`` (half up) True entries, ``f · n_label``
    of each label to within one (module docstring).
  """
  labels = np.asarray(labels)
  n = len(labels)
  rng = np.random.default_rng([seed, 0, STREAM, _SPLIT, client_index])
  order = np.lexsort((rng.random(n), labels))  # by label, random within
  k = np.arange(n)
  picked = np.floor((k + 1) * fraction + 0.5) > np.floor(k * fraction + 0.5)
  mask = np.zeros(n, bool)
  mask[order[picked]] = True
  return mask


def evaluation_clients(num_clients: int, count: int, seed: int) -> np.ndarray:
  """Sorted indices of the evaluation clients: `count` of `num_clients`
  drawn without replacement from (seed) alone (0 or more = all)."""
  if count <= 0 or count >= num_clients:
    return np.arange(num_clients)
  rng = np.random.default_rng([seed, 0, STREAM, _EVAL_CLIENTS])
  return np.sort(rng.choice(num_clients, size=count, replace=False))


def finetune_seed(seed: int, round_num: int, client_index: int) -> int:
  """The data-order seed of a client's fine-tuning after round `round_num`."""
  rng = np.random.default_rng(
      [seed, round_num, STREAM, _FINETUNE, client_index])
  return int(rng.integers(0, 2**31 - 1))


@dataclasses.dataclass(frozen=True)
class HeldOutData:
  """A federated data set with every client's held-out part set aside.

  Attributes:
    train: The same clients holding only their train parts (what training
      and fine-tuning use).
    fraction: The held-out share f.
  """

  train: federated_data.FederatedData
  fraction: float
  _held_out: dict = dataclasses.field(repr=False)

  def held_out(self, client_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a client's held-out part."""
    return self._held_out[self.train.client_ids[client_index]]


def split_clients(data: federated_data.FederatedData, fraction: float,
                  seed: int) -> HeldOutData:
  """Splits every client of `data` (module docstring).

  Raises:
    federated_data.DataError: A client would have an empty train or
      held-out part (too few examples for `fraction`).
  """
  train, held_out, sizes = {}, {}, {}
  for index, cid in enumerate(data.client_ids):
    x, y = data.client_arrays(cid)
    mask = held_out_mask(y, fraction, seed, index)
    if mask.all() or not mask.any():
      raise federated_data.DataError(
          f'client {cid} has {len(y)} examples: personalization.test_fraction'
          f'={fraction} leaves it {"no train" if mask.all() else "no held-out"}'
          ' example; change the fraction or use fewer clients')
    train[cid] = (x[~mask], y[~mask])
    held_out[cid] = (x[mask], y[mask])
    sizes[cid] = int((~mask).sum())
  view = dataclasses.replace(
      data, get_client=train.__getitem__, client_sizes=sizes)
  return HeldOutData(view, float(fraction), held_out)

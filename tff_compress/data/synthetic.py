"""synthetic(alpha, beta): Li et al.'s federated benchmark, generated lazily.

The generator of T. Li et al., "Federated Optimization in Heterogeneous
Networks" (FedProx, MLSys 2020, Section 5.1), as published in their code
(``data/synthetic_*/generate_synthetic.py``), for any number of clients. For
client ``k``:

* ``u_k ~ N(0, alpha^2)`` and ``B_k ~ N(0, beta^2)`` (the published code
  draws ``normal(0, alpha)``: alpha and beta are standard deviations);
* ``W_k in R^{60 x 10}`` and ``b_k in R^{10}`` with i.i.d. entries
  ``N(u_k, 1)``; ``v_k in R^{60}`` with i.i.d. entries ``N(B_k, 1)``;
* examples ``x ~ N(v_k, Sigma)`` with ``Sigma`` diagonal,
  ``Sigma_jj = j^-1.2`` (``j = 1..60``), and label
  ``y = argmax(x W_k + b_k)`` (= argmax of the softmax; 10 classes);
* the IID variant (FedProx's ``synthetic_iid``): one ``W``, ``b`` with
  ``N(0, 1)`` entries shared by all clients and ``v_k = 0``; alpha and beta
  play no role.

alpha does not change any label. ``u_k`` shifts every entry of ``W_k`` and
``b_k`` by the same amount, which adds ``u_k (sum_j x_j + 1)`` to every logit
of an example alike, and an argmax ignores a common shift. Client
heterogeneity therefore comes from the per-client ``N(0, 1)`` parts of
``W_k``, ``b_k`` (present even at alpha = 0) and from beta, which moves
``v_k`` and so the clients' features and, through them, their label mix.
Here ``u_k = alpha z_k`` with ``z_k`` drawn independently of alpha, so for
one seed the labels are exactly the same for every alpha (tested).

Client sizes follow a seeded heavy-tailed law, ``n_k = min(floor(L_k) +
offset, cap)`` with ``L_k ~ LogNormal(mu, sigma)`` (:data:`SIZE_LAWS`):

* ``'fedprox'``: ``floor(LogNormal(4, 2)) + 50``, uncapped (FedProx's
  generator; median 104, mean ~450; among 100,000 clients the largest has
  ~10^5-10^6 examples);
* ``'leaf'``: ``min(floor(LogNormal(3, 2)) + 5, 1000)`` (the size law of
  LEAF's synthetic generator, ``data/synthetic/main.py``; median 25).

FedProx keeps 90 % of each client's ``n_k`` examples for training; here all
``n_k`` are training examples, and held-out examples are further draws from
the same client distribution (:meth:`SyntheticGenerator.held_out`).

Determinism and cost: every random quantity of client ``k`` comes from
generators seeded with ``(seed, purpose, k)`` alone, so client ``k`` is the
same whichever clients were built before it or whether any were, and
building it costs ``O(n_k)``. Only the size vector (``O(N)`` integers) is
drawn for all clients up front; no client's examples are stored.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tff_compress.data import federated_data

DataError = federated_data.DataError

DIM = 60
NUM_CLASSES = 10
# Sigma_jj = j^-1.2, j = 1..DIM: the feature variances.
FEATURE_VARIANCES = np.arange(1, DIM + 1, dtype=np.float64) ** -1.2

# The centralised test split: TEST_DRAWS clients drawn with probability
# proportional to their size (with replacement), TEST_EXAMPLES_PER_DRAW
# held-out examples per draw. In distribution this is the pool of held-out
# examples LEAF or FedProx would form by holding out a fixed fraction of
# every client, without generating all N clients.
TEST_DRAWS = 500
TEST_EXAMPLES_PER_DRAW = 10

# Purposes of the per-client random streams (the middle seed word).
_SIZES, _MODEL, _TRAIN, _HELD_OUT, _TEST_CLIENTS, _SHARED_MODEL = range(6)


@dataclasses.dataclass(frozen=True)
class SizeLaw:
  """``n = min(floor(LogNormal(mu, sigma)) + offset, cap)`` examples.

  Attributes:
    mu: Mean of the underlying normal (of ``log n``).
    sigma: Standard deviation of the underlying normal.
    offset: Examples added to every client (so ``n >= offset``).
    cap: Largest client size, or None for no cap.
  """

  mu: float
  sigma: float
  offset: int
  cap: Optional[int]

  def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
    """`num` client sizes, int64 ``[num]``, each ``>= max(offset, 1)``."""
    sizes = np.floor(rng.lognormal(self.mu, self.sigma, num)).astype(np.int64)
    sizes += self.offset
    if self.cap is not None:
      np.minimum(sizes, self.cap, out=sizes)
    return np.maximum(sizes, 1)


# Config `data.synthetic_sizes` -> size law.
SIZE_LAWS: dict[str, SizeLaw] = {
    'fedprox': SizeLaw(mu=4.0, sigma=2.0, offset=50, cap=None),
    'leaf': SizeLaw(mu=3.0, sigma=2.0, offset=5, cap=1000),
}


@dataclasses.dataclass(frozen=True)
class ClientModel:
  """The distribution of one client's examples.

  Attributes:
    weights: float64 ``[DIM, NUM_CLASSES]``, ``W_k``.
    bias: float64 ``[NUM_CLASSES]``, ``b_k``.
    mean: float64 ``[DIM]``, ``v_k`` (the mean of the features).
  """

  weights: np.ndarray
  bias: np.ndarray
  mean: np.ndarray


def _rng(seed: int, purpose: int, index: int) -> np.random.Generator:
  # Fixed-length entropy (three words) for every stream: no two purposes or
  # indices can share a SeedSequence.
  return np.random.default_rng([seed, purpose, index])


class SyntheticGenerator:
  """synthetic(alpha, beta) clients, each generated on demand.

  Attributes:
    num_clients: Number of clients N.
    alpha: Standard deviation of ``u_k`` (model shift; labels ignore it).
    beta: Standard deviation of ``B_k`` (feature shift).
    iid: The IID variant (alpha and beta unused).
    sizes: int64 ``[N]``, training examples of every client (read-only).
  """

  def __init__(self, num_clients: int, alpha: float, beta: float, *,
               iid: bool, size_law: SizeLaw, seed: int):
    """Draws the client sizes; clients are generated by :meth:`client`.

    Args:
      num_clients: Number of clients ``N >= 1``.
      alpha: ``>= 0``, finite.
      beta: ``>= 0``, finite.
      iid: Generate the IID variant.
      size_law: Law of the client sizes.
      seed: Non-negative integer; with the arguments above it determines
        every client's examples.

    Raises:
      DataError: An argument is out of range.
    """
    if isinstance(num_clients, bool) or not isinstance(
        num_clients, (int, np.integer)) or num_clients < 1:
      raise DataError(f'synthetic: data.num_clients={num_clients!r} must be '
                      'an integer >= 1')
    for key, value in (('synthetic_alpha', alpha), ('synthetic_beta', beta)):
      if isinstance(value, bool) or not isinstance(
          value, (int, float, np.floating, np.integer)) or not (
              np.isfinite(value) and value >= 0):
        raise DataError(f'synthetic: data.{key}={value!r} must be a finite '
                        'number >= 0')
    if isinstance(seed, bool) or not isinstance(
        seed, (int, np.integer)) or seed < 0:
      raise DataError(f'synthetic: seed={seed!r} must be an integer >= 0')
    self.num_clients = int(num_clients)
    self.alpha = float(alpha)
    self.beta = float(beta)
    self.iid = bool(iid)
    self._seed = int(seed)
    self.sizes = size_law.sample(_rng(self._seed, _SIZES, 0), self.num_clients)
    self.sizes.flags.writeable = False
    self._shared = None
    if self.iid:
      rng = _rng(self._seed, _SHARED_MODEL, 0)
      self._shared = ClientModel(
          weights=rng.standard_normal((DIM, NUM_CLASSES)),
          bias=rng.standard_normal(NUM_CLASSES),
          mean=np.zeros(DIM))

  def _check_index(self, index: int) -> int:
    if not 0 <= index < self.num_clients:
      raise DataError(f'synthetic: client index {index} is outside '
                      f'0..{self.num_clients - 1}')
    return int(index)

  def client_model(self, index: int) -> ClientModel:
    """``(W_k, b_k, v_k)`` of client `index` (the shared ones if IID)."""
    index = self._check_index(index)
    if self._shared is not None:
      return self._shared
    rng = _rng(self._seed, _MODEL, index)
    u = self.alpha * rng.standard_normal()
    b_shift = self.beta * rng.standard_normal()
    return ClientModel(
        weights=u + rng.standard_normal((DIM, NUM_CLASSES)),
        bias=u + rng.standard_normal(NUM_CLASSES),
        mean=b_shift + rng.standard_normal(DIM))

  def _examples(self, model: ClientModel, rng: np.random.Generator,
                count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` examples ``x ~ N(v, Sigma)``, ``y = argmax(x W + b)``."""
    x = rng.standard_normal((count, DIM), dtype=np.float32)
    x *= np.sqrt(FEATURE_VARIANCES).astype(np.float32)
    x += model.mean.astype(np.float32)
    # Labels from the float32 features the model will see, so that a label
    # is an exact function of its example.
    logits = x.astype(np.float64) @ model.weights + model.bias
    return x, np.argmax(logits, axis=1).astype(np.int32)

  def client(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The training examples of client `index`.

    Returns:
      float32 ``[sizes[index], DIM]`` features and int32 labels in
      ``[0, NUM_CLASSES)``.
    """
    index = self._check_index(index)
    return self._examples(self.client_model(index),
                          _rng(self._seed, _TRAIN, index),
                          int(self.sizes[index]))

  def held_out(self, index: int, count: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """`count` further examples of client `index`, independent of training.

    They come from the client's distribution through a stream of their own:
    the first ``m`` of ``held_out(k, n)`` are ``held_out(k, m)``.
    """
    index = self._check_index(index)
    return self._examples(self.client_model(index),
                          _rng(self._seed, _HELD_OUT, index), int(count))

  def test_split(self, draws: int = TEST_DRAWS,
                 per_draw: int = TEST_EXAMPLES_PER_DRAW
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The centralised test split: held-out examples of sampled clients.

    `draws` clients are drawn with replacement with probability
    ``n_k / sum(n)``; a client drawn ``c`` times contributes
    ``held_out(k, c * per_draw)``. Each test example is thus a held-out
    example of a client picked in proportion to its size, as in a pool that
    holds out the same fraction of every client's data.

    Returns:
      ``(x, y, clients)``: float32 ``[draws * per_draw, DIM]`` features,
      int32 labels and the int64 index of each example's client; the rows
      are grouped by client in increasing index order.
    """
    rng = _rng(self._seed, _TEST_CLIENTS, 0)
    counts = rng.multinomial(draws, self.sizes / self.sizes.sum())
    drawn = np.flatnonzero(counts)
    parts = [self.held_out(k, counts[k] * per_draw) for k in drawn]
    return (np.concatenate([x for x, _ in parts]),
            np.concatenate([y for _, y in parts]),
            np.repeat(drawn, counts[drawn] * per_draw))

"""Lloyd-Max quantizers of the standard normal distribution N(0, 1).

The b-bit Lloyd-Max quantizer (Lloyd 1957/1982, Max 1960) has L = 2^b
reconstruction levels c_1 < ... < c_L and decision boundaries
t_k = (c_k + c_{k+1}) / 2 that minimise the mean squared error
D_b = E[(Z - Q(Z))^2], Z ~ N(0, 1). The optimum satisfies two conditions:

* nearest neighbour: the boundaries are the midpoints of adjacent levels;
* centroid: c_k = E[Z | t_{k-1} < Z <= t_k]
        = (phi(t_{k-1}) - phi(t_k)) / (Phi(t_k) - Phi(t_{k-1})).

For a log-concave density the fixed point is unique (Fleischer 1964), so
any convergent solver finds the optimum. Lloyd's alternation converges
linearly and very slowly for many levels (~10^5 iterations at 8 bits and
still ~10^-3 off), so we solve the fixed-point equations with Newton's
method on the positive half (the quantizer is symmetric: for even L, 0 is
a boundary), starting from the Panter-Dite companding approximation (level
density ~ phi^(1/3), i.e. equal-probability cells of N(0, 3)). It
converges to ~1e-14 in a few iterations. Centroid and midpoint conditions
give D_b = 1 - sum_k P_k c_k^2 (tested against Max's published values:
D_1 = 1 - 2/pi = 0.3634, D_2 = 0.1175, D_3 = 0.03455, D_4 = 0.009501).

Numpy and `math` only: the tables are graph constants (float32) of the
EDEN quantizer (`eden.py`); the TF-free device client can import them too.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

MAX_BITS = 8
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Table(NamedTuple):
  """A b-bit Lloyd-Max quantizer of N(0, 1), float64, increasing.

  Attributes:
    centroids: [2^b] reconstruction levels, symmetric about 0.
    boundaries: [2^b - 1] decision thresholds (midpoints; the middle one 0).
    mse: D_b = E[(Z - Q(Z))^2] for Z ~ N(0, 1), in units of Var(Z) = 1.
  """

  centroids: np.ndarray
  boundaries: np.ndarray
  mse: float


def _pdf(t: np.ndarray) -> np.ndarray:
  return np.exp(-0.5 * t * t) * _INV_SQRT_2PI


def _tail(t: np.ndarray) -> np.ndarray:
  """P(Z > t), accurate in the far tail (erfc, not 1 - erf)."""
  return np.array([0.5 * math.erfc(v / _SQRT2) for v in t])


def _half_normal_quantile(p: float, sigma: float) -> float:
  """t with P(|Z| < t) = p for Z ~ N(0, sigma^2), by bisection."""
  lo, hi = 0.0, 40.0 * sigma
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if math.erf(mid / (sigma * _SQRT2)) < p:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def _centroid_map(c: np.ndarray):
  """Centroids of the cells that midpoints of `c` cut (0, inf) into.

  Returns (F, dF/da, dF/db): the new centroids and their derivatives with
  respect to each cell's lower and upper boundary,
  dF/db = phi(b) (b - F) / P, dF/da = phi(a) (F - a) / P, P = cell mass.
  """
  t = np.concatenate([[0.0], 0.5 * (c[:-1] + c[1:]), [np.inf]])
  pdf, tail = _pdf(t), _tail(t)
  mass = tail[:-1] - tail[1:]
  f = (pdf[:-1] - pdf[1:]) / mass
  lower, upper = t[:-1], t[1:]
  d_lower = pdf[:-1] * (f - lower) / mass
  d_upper = np.zeros_like(f)
  d_upper[:-1] = pdf[1:-1] * (upper[:-1] - f[:-1]) / mass[:-1]
  return f, d_lower, d_upper


@functools.lru_cache(maxsize=None)
def gaussian_table(bits: int) -> Table:
  """The b-bit Lloyd-Max quantizer of N(0, 1), b = 1..8 (cached).

  Raises:
    ValueError: `bits` is not an integer in 1..8.
  """
  if isinstance(bits, bool) or not isinstance(bits, int) or not (
      1 <= bits <= MAX_BITS):
    raise ValueError(f'Lloyd-Max bits must be an integer in 1..{MAX_BITS}, '
                     f'got {bits!r}')
  k = 1 << (bits - 1)  # levels on the positive half
  c = np.array([_half_normal_quantile((i + 0.5) / k, math.sqrt(3.0))
                for i in range(k)])
  for _ in range(100):
    f, d_lower, d_upper = _centroid_map(c)
    # G(c) = F(c) - c = 0. Cell i's boundaries are (c_{i-1} + c_i) / 2 and
    # (c_i + c_{i+1}) / 2, so the Jacobian of G is tridiagonal.
    jac = -np.eye(k)
    idx = np.arange(k)
    jac[idx[1:], idx[1:] - 1] += 0.5 * d_lower[1:]
    jac[idx[1:], idx[1:]] += 0.5 * d_lower[1:]
    jac[idx[:-1], idx[:-1]] += 0.5 * d_upper[:-1]
    jac[idx[:-1], idx[:-1] + 1] += 0.5 * d_upper[:-1]
    step = np.linalg.solve(jac, c - f)
    c = c + step
    if np.max(np.abs(step)) < 1e-12:
      break
  c = _centroid_map(c)[0]  # one last centroid step: exact centroid condition
  half_boundaries = 0.5 * (c[:-1] + c[1:])
  tail = _tail(np.concatenate([[0.0], half_boundaries, [np.inf]]))
  mass = tail[:-1] - tail[1:]
  mse = 1.0 - 2.0 * float(np.sum(mass * c * c))
  centroids = np.concatenate([-c[::-1], c])
  boundaries = np.concatenate([-half_boundaries[::-1], [0.0],
                               half_boundaries])
  centroids.setflags(write=False)
  boundaries.setflags(write=False)
  return Table(centroids, boundaries, mse)

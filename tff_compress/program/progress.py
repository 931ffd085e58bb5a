"""One progress line per round, with an ETA."""

from __future__ import annotations

import time
from typing import Optional, TextIO


def hms(seconds: float) -> str:
  """'1:02:03' or '2:03'."""
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:d}:{s:02d}'


class Progress:
  """Prints one line per round: losses, accuracy, bytes, time, ETA, ε,
  and the client-fault counts when faults are simulated."""

  def __init__(self, rounds: int, out: TextIO, start_round: int):
    self.rounds = rounds
    self.out = out
    self.start_round = start_round
    self._t0 = time.monotonic()

  def round(self, row: dict) -> None:
    r = row['round']
    done = r - self.start_round + 1
    elapsed = time.monotonic() - self._t0
    eta = elapsed / done * (self.rounds - r)
    print(f'round {r:>4}/{self.rounds} | {_train(row)} | {_eval(row)} | down'
          f' {row["bytes_down"] / 1e6:8.2f} MB up {row["bytes_up"] / 1e6:8.2f}'
          f' MB | {row["round_seconds"]:6.2f} s | ETA {hms(eta)}'
          + _epsilon(row.get('epsilon')) + _faults(row),
          file=self.out, flush=True)


def _train(row: dict) -> str:
  if row.get('train_loss') is None:  # nobody reported
    return 'train loss    -   acc    -   '
  return (f'train loss {row["train_loss"]:.4f}'
          f' acc {row["train_accuracy"]:.4f}')


def _eval(row: dict) -> str:
  acc = row.get('eval_accuracy')
  return f'eval acc {acc:.4f}' if acc is not None else 'eval acc   -   '


def _epsilon(epsilon: Optional[float]) -> str:
  return f' | ε {epsilon:.3g}' if epsilon is not None else ''


def _faults(row: dict) -> str:
  if row.get('round_latency') is None:
    return ''
  return (f' | {row["clients_reported"]}/{row["clients"]} reported,'
          f' {row["clients_dropped"]} dropped, {row["clients_late"]} late,'
          f' {row["zeroed"] or 0} zeroed, {row["round_latency"]:.1f} s sim'
          + (' | SKIPPED (model unchanged)' if row['skipped'] else ''))

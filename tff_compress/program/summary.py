"""`summary.json`: the figures every run reports, from its `metrics.csv` rows."""

from __future__ import annotations

from typing import Sequence, TextIO

import numpy as np


def _floats(rows: Sequence[dict], key: str) -> list[float]:
  return [float(r[key]) for r in rows if r.get(key) not in (None, '')]


def summarize(*, name: str, algorithm: str, rows: Sequence[dict],
              model_params: int, client_model_params: int) -> dict:
  """The keys every run's summary has.

  Args:
    name: The config name.
    algorithm: The config's algorithm.
    rows: `metrics.csv` rows (strings, as read back).
    model_params: Parameters of the model a float32 round would send (the
      global model; FedGKT: the whole large network).
    client_model_params: Parameters of the model a client trains.
  """
  evals = [r for r in rows if r.get('eval_accuracy')]
  down = [int(r['bytes_down']) for r in rows]
  up = [int(r['bytes_up']) for r in rows]
  client_rounds = sum(int(r['clients']) for r in rows)
  per_client_down = sum(down) / max(1, client_rounds)
  per_client_up = sum(up) / max(1, client_rounds)
  float_bytes = 4 * model_params  # one float32 model
  train_losses = _floats(rows, 'train_loss')
  flops = _floats(rows, 'client_flops')
  seconds = _floats(rows, 'round_seconds')
  return {
      'config_name': name,
      'algorithm': algorithm,
      'rounds': len(rows),
      'final_eval_accuracy': (float(evals[-1]['eval_accuracy'])
                              if evals else None),
      'final_eval_loss': float(evals[-1]['eval_loss']) if evals else None,
      'final_train_loss': train_losses[-1] if train_losses else None,
      'total_bytes_down': sum(down),
      'total_bytes_up': sum(up),
      'mean_bytes_down_per_client': per_client_down,
      'mean_bytes_up_per_client': per_client_up,
      'compression_down_vs_float32': (float_bytes / per_client_down
                                      if per_client_down else None),
      'compression_up_vs_float32': (float_bytes / per_client_up
                                    if per_client_up else None),
      'mean_client_flops': float(np.mean(flops)) if flops else None,
      'model_params': model_params,
      'client_model_params': client_model_params,
      'epsilon': None,
      'total_round_seconds': sum(seconds),
      'mean_round_seconds': float(np.mean(seconds)) if seconds else None,
  }


def print_summary(summary: dict, out: TextIO) -> None:
  """The final line of a run."""
  acc = summary['final_eval_accuracy']
  loss = summary['final_eval_loss']
  flops = summary['mean_client_flops']
  print(
      f'done: {summary["rounds"]} rounds | final eval accuracy '
      f'{"-" if acc is None else f"{acc:.4f}"} loss '
      f'{"-" if loss is None else f"{loss:.4f}"} | '
      f'{summary["total_bytes_down"] / 1e6:.1f} MB down, '
      f'{summary["total_bytes_up"] / 1e6:.1f} MB up | '
      f'{"-" if flops is None else f"{flops / 1e9:.3f}"} GFLOPs per client '
      f'per round | {summary["total_round_seconds"]:.1f} s of rounds',
      file=out, flush=True)

"""Device rounds of a run, driven from the command line (`device_round.py`).

A run directory's device rounds live in `<run_dir>/device_rounds/`:

  checkpoints/     the server state after each round (`server.ServerState`:
                   global weights, aggregation and optimizer state, round)
  metrics.csv      one row per device round (`COLUMNS`)
  round_<r>.json   per-device outcomes of round r (accepted / zeroed /
                   rejected with the reason), bytes, the eval figures

Round r starts from the state after round r - 1, or, for r = 0, from the
run's final weights (`final_weights.npz`) with a fresh server optimizer.

  broadcast --round=r --out_dir=D   writes D/broadcast_<slot>.bin for the K
                                    slots of the round (K =
                                    clients_per_round), D/slots.json (per
                                    slot: the client it stands for, its
                                    tier, the export folder of the trainer
                                    its device runs, its message), and with
                                    `client_data` D/client_<slot>.npz: the
                                    examples and shuffle seed of the client
                                    the simulation samples for that slot
  aggregate --round=r --updates_dir=D
                                    reads D/update_<slot>.bin, runs the run's
                                    aggregation and server optimizer
                                    (`server.DeviceRoundServer`), saves the
                                    next checkpoint, the metrics row and the
                                    outcomes

`--round` must be the next round (the state's): a broadcast of another
round, or aggregating a round twice, is refused, so a shell loop that
repeats a step cannot corrupt the state.

Device tiers (`tiers.mix`): slot k of round r stands for the k-th client
the simulation samples in its round r + 1, and that client's tier decides
what the slot's device runs: `slots.json` names the folder of its trainer
(`tier_<name>`, in the export directory, default `<run_dir>/tflite`), and
`broadcast_<slot>.bin` holds that tier's slice (`server.py`). An update
laid out for another tier is rejected with the reason.
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
from typing import Optional, TextIO

import numpy as np
import tensorflow as tf

from mobile_export import export_lib
from mobile_export import server as server_lib
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.program import checkpoints as checkpoints_lib
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.program import sampling

SUBDIR = 'device_rounds'
COLUMNS = ('round', 'eval_loss', 'eval_accuracy', 'bytes_down', 'bytes_up',
           'clients', 'clients_reported', 'zeroed', 'rejected',
           'round_seconds')
_UPDATE = re.compile(r'^update_(\d+)\.bin$')
SLOTS_FILE = 'slots.json'


class DeviceRoundError(ValueError):
  """A device-round command cannot run (the message says why)."""


def broadcast_path(out_dir: str, slot: int) -> str:
  return os.path.join(out_dir, f'broadcast_{slot}.bin')


def client_data_path(out_dir: str, slot: int) -> str:
  return os.path.join(out_dir, f'client_{slot}.npz')


def update_path(updates_dir: str, slot: int) -> str:
  return os.path.join(updates_dir, f'update_{slot}.bin')


def slots_path(out_dir: str) -> str:
  return os.path.join(out_dir, SLOTS_FILE)


class DeviceRounds:
  """The device rounds of one run directory."""

  def __init__(self, run_dir: str, max_weight: float =
               server_lib.DEFAULT_MAX_WEIGHT):
    config, weights = export_lib.load_run(run_dir)
    self.run_dir = run_dir
    self.config = config
    self.settings = config_lib.settings(config)
    if self.settings.tiers.train_only:
      # The other tiers' sampled clients sit the simulated rounds out: a
      # device round would have to idle their phones.
      raise DeviceRoundError(
          f'{run_dir} is a tiers.train_only={self.settings.tiers.train_only!r}'
          ' baseline run: device rounds of train_only runs are not supported'
          ' (device rounds of tiered runs without it are)')
    self.data = data_registry.build_federated_data(
        self.settings.data, seed=self.settings.run.seed)
    self.model = export_lib.build_keras_model(
        config, self.data.input_shape, self.data.num_classes)
    if [tuple(w.shape) for w in weights] != [
        tuple(w.shape) for w in self.model.weights]:
      raise DeviceRoundError(f'{run_dir}/final_weights.npz does not fit '
                             f'model {self.settings.model.name!r}')
    self.final_weights = weights
    self.server = server_lib.DeviceRoundServer(
        self.settings, self.model, max_weight=max_weight,
        num_clients=len(self.data.client_ids))
    self.dir = os.path.join(run_dir, SUBDIR)
    self._checkpoints = checkpoints_lib.Checkpoints(
        os.path.join(self.dir, 'checkpoints'), keep=3)
    self.metrics = run_dir_lib.MetricsCsv(
        os.path.join(self.dir, 'metrics.csv'), COLUMNS)

  # --- state ------------------------------------------------------------------

  def state(self) -> server_lib.ServerState:
    """The latest saved state, or round 0's (needs a TFF context)."""
    initial = self.server.initial_state(
        [w for w, v in zip(self.final_weights, self.model.weights)
         if v.trainable])
    loaded, _ = self._checkpoints.load_latest(initial.to_structure())
    return (initial if loaded is None else
            server_lib.ServerState.from_structure(loaded))

  def _check_round(self, state: server_lib.ServerState, round_index: int):
    if round_index != state.round:
      done = (f'rounds 0..{state.round - 1} are aggregated'
              if state.round else 'no round is aggregated yet')
      raise DeviceRoundError(
          f'--round={round_index}, but the next device round is '
          f'{state.round} ({done})')

  # --- commands ---------------------------------------------------------------

  def broadcast(self, round_index: int, out_dir: str,
                client_data: bool = False, out: Optional[TextIO] = None
                ) -> list[str]:
    """Writes the round's K broadcast messages, `slots.json` (and client
    data); returns the paths of the messages."""
    state = self.state()
    self._check_round(state, round_index)
    os.makedirs(out_dir, exist_ok=True)
    server, seed = self.server, self.settings.run.seed
    clients = server.slot_clients(round_index)
    written, slots = [], []
    for slot, index in enumerate(clients):
      blob = server.broadcast(state.weights, round_index, slot)
      path = broadcast_path(out_dir, slot)
      with open(path, 'wb') as f:
        f.write(blob)
      written.append(path)
      layout = server.layout(round_index, slot)
      entry = {'slot': slot, 'client': int(index), 'tier': layout.tier,
               'model_folder': layout.folder,
               'broadcast': os.path.basename(path),
               'broadcast_bytes': len(blob)}
      if client_data:
        x, y = self.data.client_arrays(self.data.client_ids[index])
        data_path = client_data_path(out_dir, slot)
        np.savez(data_path, x=x, y=y, shuffle_seed=sampling.shuffle_seed(
            seed, round_index + 1, int(index)))
        entry['client_data'] = os.path.basename(data_path)
      slots.append(entry)
    run_dir_lib.write_json(slots_path(out_dir),
                           {'round': round_index, 'slots': slots})
    if out is not None:
      by_folder = collections.defaultdict(list)
      for entry in slots:
        by_folder[entry['model_folder']].append(entry)
      groups = '; '.join(
          (f'tier {group[0]["tier"]} ({folder}/): '
           f'slot{"s" if len(group) > 1 else ""} '
           f'{",".join(str(e["slot"]) for e in group)}, '
           if group[0]['tier'] else '')
          + f'{group[0]["broadcast_bytes"]:,} bytes each'
          for folder, group in by_folder.items())
      print(f'round {round_index}: {len(slots)} broadcast messages in '
            f'{out_dir} ({groups}), {SLOTS_FILE}'
            + (' and client_<slot>.npz' if client_data else ''), file=out,
            flush=True)
    return written

  def aggregate(self, round_index: int, updates_dir: str,
                out: Optional[TextIO] = None) -> dict:
    """Aggregates the round's update messages; returns the metrics row."""
    t0 = time.monotonic()
    state = self.state()
    self._check_round(state, round_index)
    if not os.path.isdir(updates_dir):
      raise DeviceRoundError(f'--updates_dir {updates_dir} is not a '
                             'directory')
    updates = {}
    for name in sorted(os.listdir(updates_dir)):
      m = _UPDATE.match(name)
      if m:
        with open(os.path.join(updates_dir, name), 'rb') as f:
          updates[int(m.group(1))] = f.read()
    if not updates:
      raise DeviceRoundError(f'no update_<slot>.bin in {updates_dir}')
    result = self.server.run_round(state, updates)
    self.model.set_weights(self._full_weights(result.state.weights))
    loss, accuracy = self._evaluate()
    statuses = collections.Counter(o.status for o in result.outcomes)
    row = {
        'round': round_index, 'eval_loss': loss, 'eval_accuracy': accuracy,
        'bytes_down': self._bytes_down(state, round_index),
        'bytes_up': sum(o.bytes for o in result.outcomes),
        'clients': len(result.outcomes),
        'clients_reported': statuses[server_lib.ACCEPTED] +
                            statuses[server_lib.ZEROED],
        'zeroed': statuses[server_lib.ZEROED],
        'rejected': statuses[server_lib.REJECTED],
        'round_seconds': time.monotonic() - t0,
    }
    os.makedirs(self.dir, exist_ok=True)
    run_dir_lib.write_json(
        os.path.join(self.dir, f'round_{round_index}.json'),
        {'round': round_index, 'metrics': row,
         'outcomes': [o.to_json() for o in result.outcomes]})
    self.metrics.truncate_after(round_index - 1)
    self.metrics.append(row)
    self._checkpoints.save(result.state.to_structure(), round_index + 1)
    if out is not None:
      for o in result.outcomes:
        print(f'slot {o.slot}' + (f' (tier {o.tier})' if o.tier else '')
              + f': {o.status}' + (f' ({o.reason})' if o.reason else ''),
              file=out)
      print(f'round {round_index}: {row["clients_reported"]}/'
            f'{row["clients"]} updates aggregated, {row["zeroed"]} zeroed, '
            f'{row["rejected"]} rejected | eval acc {accuracy:.4f} loss '
            f'{loss:.4f} | next round {round_index + 1}', file=out,
            flush=True)
    return row

  def _bytes_down(self, state: server_lib.ServerState,
                  round_index: int) -> int:
    """Bytes of the round's K broadcast messages (one encoding per
    layout: a layout's messages all have its size)."""
    sizes, total = {}, 0
    for slot in range(self.server.clients_per_round):
      layout = self.server.layout(round_index, slot)
      if layout.folder not in sizes:
        sizes[layout.folder] = len(
            self.server.broadcast(state.weights, round_index, slot))
      total += sizes[layout.folder]
    return total

  def _full_weights(self, trainable):
    """Trainable weights -> every Keras weight (non-trainable kept)."""
    it = iter(trainable)
    return [next(it) if v.trainable else w
            for v, w in zip(self.model.weights, self.model.get_weights())]

  def _evaluate(self) -> tuple[float, float]:
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logits = self.model.predict(self.data.test_x, batch_size=256, verbose=0)
    return (float(loss(self.data.test_y, logits)),
            float(np.mean(np.argmax(logits, 1) == self.data.test_y)))

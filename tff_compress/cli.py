"""Shared command-line plumbing for the binaries: config flag, clean errors.

User mistakes (bad config keys/values, unusable run dirs, missing data) end
with one line on stderr naming what is wrong and exit status 2 — never a
traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

# Quiet TensorFlow's C++ start-up banner unless the user asked otherwise.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

USAGE_EXIT = 2


class UserError(Exception):
  """A mistake the user can fix; printed as one line, exit status 2."""


def fail(program: str, message: str) -> None:
  print(f'{program}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT)


def _chdir_for_relative_paths(argv: Sequence[str]) -> list[str]:
  """`bazel run` starts in the runfiles tree; configs are user paths.

  Rewrites `--config=relative/path.py` to an absolute path against the
  directory the user ran `bazel run` from (or the workspace for configs/).
  """
  base = os.environ.get('BUILD_WORKING_DIRECTORY')
  workspace = os.environ.get('BUILD_WORKSPACE_DIRECTORY')
  out = []
  for arg in argv:
    if arg.startswith('--config=') and not arg.startswith('--config.'):
      path = arg[len('--config='):]
      spec, colon, rest = path.partition(':')
      if not os.path.isabs(spec):
        candidates = [os.path.join(d, spec) for d in (base, workspace) if d]
        candidates.append(os.path.abspath(spec))
        for c in candidates:
          if os.path.exists(c):
            spec = c
            break
      arg = f'--config={spec}{colon}{rest}'
    out.append(arg)
  return out


def define_config_flag(default_config_path: str):
  return config_flags.DEFINE_config_file(
      'config', default_config_path,
      'Config file (configs/NAME.py); override keys with --config.KEY=VALUE.',
      lock_config=True)


def run_main(program: str, main: Callable[[Sequence[str]], None]) -> None:
  """`app.run` with flag and config errors reported as one line, exit 2."""

  def parse(argv):
    argv = _chdir_for_relative_paths(argv)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(program, _one_line(e))
    except (KeyError, AttributeError, TypeError, ValueError, OSError,
            SyntaxError, ImportError) as e:
      fail(program, f'bad --config: {_one_line(e)}')

  def guarded(argv):
    try:
      main(argv)
    except UserError as e:
      fail(program, _one_line(e))

  app.run(guarded, flags_parser=parse)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().replace('\n', ' ')
  return text or type(e).__name__

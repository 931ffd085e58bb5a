"""The code's structure stays what docs/DESIGN.md says it is.

Read from the sources and BUILD files (no imports executed):

* no import cycle between packages (`tff_compress/<package>/`, each root
  module of `tff_compress/`, `mobile_export/`);
* no module uses another module's private names (`from m import _x`,
  `m._x`);
* every Bazel target declares, as a direct dependency, the target of every
  project module its sources import (Python rules do not enforce it; a
  missing one breaks `bazel test` of that target alone).
"""

from __future__ import annotations

import ast
import collections
import os
import re
from typing import Iterator, Optional

from absl.testing import absltest

# The source tree itself (under `bazel test` this file is a symlink from the
# runfiles tree, which holds only declared files).
WORKSPACE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PROJECT = ('tff_compress', 'mobile_export', 'tests', 'benchmarks')
_TARGET = re.compile(
    r'^(py_library|py_binary|py_test|sh_binary)\(\n(.*?)^\)', re.S | re.M)


def _list(body: str, attr: str) -> list[str]:
  m = re.search(rf'^\s*{attr} = (\[.*?\]|"[^"]*")', body, re.S | re.M)
  if not m:
    return []
  return re.findall(r'"([^"]+)"', m.group(1))


def build_targets() -> dict[str, dict]:
  """label -> {'kind', 'srcs', 'data' (workspace paths), 'deps' (labels)}."""
  targets = {}
  for root, dirs, files in os.walk(WORKSPACE):
    dirs[:] = [d for d in dirs if not d.startswith(('.', 'bazel-'))
               and d != 'third_party' and d != '__pycache__']
    if 'BUILD' not in files:
      continue
    package = os.path.relpath(root, WORKSPACE).replace(os.sep, '/')
    package = '' if package == '.' else package
    with open(os.path.join(root, 'BUILD')) as f:
      text = f.read()
    for kind, body in _TARGET.findall(text):
      name = _list(body, 'name')[0]
      label = f'//{package}:{name}'
      deps = []
      for d in _list(body, 'deps'):
        deps.append(f'//{package}{d}' if d.startswith(':') else d)
      srcs, data = (
          [f'{package}/{s}' if package else s for s in _list(body, attr)
           if not s.startswith(('/', ':'))] for attr in ('srcs', 'data'))
      targets[label] = {'kind': kind, 'srcs': srcs, 'data': data,
                        'deps': deps}
  return targets


def python_files() -> Iterator[str]:
  """Workspace-relative paths of the project's Python files."""
  for top in PROJECT:
    for root, dirs, files in os.walk(os.path.join(WORKSPACE, top)):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      for f in files:
        if f.endswith('.py'):
          yield os.path.relpath(os.path.join(root, f), WORKSPACE)


def module_of(path: str) -> str:
  module = path[:-len('.py')].replace(os.sep, '.')
  return module[:-len('.__init__')] if module.endswith('.__init__') else module


def _is_module(name: str) -> bool:
  base = os.path.join(WORKSPACE, *name.split('.'))
  return os.path.isfile(base + '.py')


def imports(path: str) -> list[tuple[str, Optional[str], int]]:
  """(imported project module, imported name or None, line) of a file,
  including imports inside functions."""
  with open(os.path.join(WORKSPACE, path)) as f:
    tree = ast.parse(f.read())
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split('.')[0] in PROJECT:
          out.append((alias.name, None, node.lineno))
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.split('.')[0] in PROJECT) and node.level == 0:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        if _is_module(full):
          out.append((full, None, node.lineno))
        else:
          out.append((node.module, alias.name, node.lineno))
  return out


def package_of(module: str) -> str:
  """The node of the package graph a module belongs to."""
  parts = module.split('.')
  if parts[0] == 'tff_compress' and len(parts) == 2:
    return module  # a root module: its own node
  return '.'.join(parts[:2]) if parts[0] == 'tff_compress' else parts[0]


def _cycles(graph: dict[str, set]) -> list[list[str]]:
  """Strongly connected components with more than one node (Tarjan)."""
  index, low, on, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


class StructureTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.files = sorted(python_files())
    cls.imports = {p: imports(p) for p in cls.files}

  def test_no_package_cycles(self):
    graph = collections.defaultdict(set)
    for path, found in self.imports.items():
      src = module_of(path)
      if src.split('.')[0] not in ('tff_compress', 'mobile_export'):
        continue
      for module, _, _ in found:
        a, b = package_of(src), package_of(module)
        if a != b:
          graph[a].add(b)
    self.assertEqual(_cycles(graph), [])

  def test_no_private_names_across_modules(self):
    problems = []
    for path, found in self.imports.items():
      with open(os.path.join(WORKSPACE, path)) as f:
        tree = ast.parse(f.read())
      project_aliases = set()  # local names bound to project modules
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          for alias in node.names:
            if alias.name.split('.')[0] in PROJECT:
              project_aliases.add(alias.asname or alias.name.split('.')[0])
        elif isinstance(node, ast.ImportFrom) and node.module and (
            node.module.split('.')[0] in PROJECT):
          for alias in node.names:
            if _is_module(f'{node.module}.{alias.name}'):
              project_aliases.add(alias.asname or alias.name)
      for module, name, line in found:
        if name and name.startswith('_'):
          problems.append(f'{path}:{line}: from {module} import {name}')
      for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and
            isinstance(node.value, ast.Name) and
            node.value.id in project_aliases and
            node.attr.startswith('_') and not node.attr.startswith('__')):
          problems.append(f'{path}:{node.lineno}: '
                          f'{node.value.id}.{node.attr}')
    self.assertEqual(problems, [])

  def test_every_import_is_a_declared_dependency(self):
    targets = build_targets()
    owner = {}
    for label, t in targets.items():
      for src in t['srcs']:
        owner.setdefault(src, label)
    data_files = {d for t in targets.values() for d in t['data']}
    problems = []
    for path, found in self.imports.items():
      label = owner.get(path)
      if label is None:
        if path.endswith('__init__.py') or path in data_files:
          continue
        problems.append(f'{path}: in no Bazel target')
        continue
      declared = set(targets[label]['deps'])
      for module, _, line in found:
        dep = owner.get(module.replace('.', '/') + '.py')
        if dep is None or dep == label:
          continue
        if dep not in declared:
          problems.append(f'{label} ({path}:{line}) imports {module} '
                          f'without depending on {dep}')
    self.assertEqual(problems, [])

  def test_every_declared_source_exists(self):
    missing = [f'{label}: {src}' for label, t in build_targets().items()
               for src in t['srcs']
               if not os.path.exists(os.path.join(WORKSPACE, src))]
    self.assertEqual(missing, [])


if __name__ == '__main__':
  absltest.main()

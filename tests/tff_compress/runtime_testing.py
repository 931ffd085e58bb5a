"""Test helper: a test case whose tests run in one private TFF worker."""

from __future__ import annotations

from absl.testing import parameterized

from tff_compress.runtime import local as local_runtime


class LocalRuntimeTestCase(parameterized.TestCase):
  """Starts `local_runtime.local_context()` once for the class's tests."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._runtime = local_runtime.local_context()
    cls._runtime.__enter__()

  @classmethod
  def tearDownClass(cls):
    cls._runtime.__exit__(None, None, None)
    super().tearDownClass()

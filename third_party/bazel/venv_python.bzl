"""A Python toolchain whose interpreter is the workspace's .venv.

Bazel 4's py_runtime needs an absolute interpreter path, which depends on
where the clone lives; this repository rule computes it at fetch time.
`./bazelw` creates the venv before Bazel runs.
"""

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(rctx):
    workspace_dir = rctx.path(Label("@//:WORKSPACE")).dirname
    interpreter = "%s/.venv/bin/python3" % workspace_dir
    rctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % rctx.name)
    rctx.file("BUILD", _BUILD.format(interpreter = interpreter))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    local = True,
)

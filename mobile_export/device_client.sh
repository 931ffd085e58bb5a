#!/usr/bin/env bash
# Runs mobile_export/device_client.py in the TF-free .venv-device (see BUILD).
set -euo pipefail
ws="${BUILD_WORKSPACE_DIRECTORY:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)}"
py="$ws/.venv-device/bin/python3"
if [ ! -x "$py" ]; then
  echo "device_client: error: $py is missing; run it through ./bazelw, which creates .venv-device" >&2
  exit 2
fi
cd "${BUILD_WORKING_DIRECTORY:-$PWD}"
PYTHONPATH="$ws" PYTHONNOUSERSITE=1 exec "$py" -m mobile_export.device_client "$@"

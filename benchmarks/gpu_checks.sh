#!/usr/bin/env bash
# The GPU checks in one command, from the source tree (no install, no network):
#   bash benchmarks/gpu_checks.sh [OUT_DIR] [--dry-run] [--budget SECONDS] [--sections env,correctness,...]
# writes OUT_DIR/gpu_report.md and gpu_report.json (default ./gpu_report/); see benchmarks/gpu_checks.py.
# PYTHON picks the interpreter (default: python3).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src:$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_checks.py" "$@"

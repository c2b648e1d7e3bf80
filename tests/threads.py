"""Run a script in fresh interpreters with different ``NUMBA_NUM_THREADS``.

Numba fixes its thread pool at first use, so thread-count determinism is
checked in subprocesses: each test prints a digest of its outputs and
compares what the runs printed.
"""
import os
import subprocess
import sys


def outputs_by_thread_count(script: str, counts=("1", "2"), **env) -> list:
    """stdout (text) of ``python -c script`` once per entry of ``counts``."""
    out = []
    for threads in counts:
        run_env = {**os.environ, **env, "NUMBA_NUM_THREADS": threads}
        res = subprocess.run([sys.executable, "-c", script], env=run_env, capture_output=True, text=True,
                             check=True)
        out.append(res.stdout.strip())
    return out

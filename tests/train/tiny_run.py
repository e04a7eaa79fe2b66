"""A tiny hybrid training config for the sharding/checkpoint tests, and a runner for it in a
fresh interpreter (fake CPU devices must be configured before JAX starts).

As a script: ``python tiny_run.py '{"overrides": [...], "workdir": ..., "resume": false,
"params_out": "x.npz"}'`` trains ``TINY`` with the overrides and prints one JSON line
``{"losses": [...], "specs": {...}}`` (process 0 of a multi-process job only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from memarch.models import LMConfig
from memarch.train.config import DataConfig, OptimConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]

TINY = TrainConfig(
    name="tiny_hybrid",
    model=LMConfig(
        vocab_size=32,
        d_model=32,
        num_heads=2,
        pattern="GA",  # Gated DeltaNet then attention: every sharding rule is exercised
        mlp_hidden=64,
        mixers={"gated_deltanet": {"short_conv": 4}},
    ),
    data=DataConfig(
        vocab_size=32,
        train_slices=((16, 2), (16, 4)),
        eval_slices=((16, 2),),
        num_train_examples=1000,
        num_eval_examples=8,
    ),
    optim=OptimConfig(learning_rate=3e-3, warmup_steps=5),
    batch_size=8,
    num_steps=20,
    log_every=1,
    tensorboard=False,
)


def run(spec: dict, *, devices: int = 1, timeout: float = 300, wait: bool = True, env=None):
    """Runs this file as a script on ``devices`` fake CPU devices; returns the parsed JSON line
    (``wait=True``) or the ``Popen`` (``wait=False``)."""
    full_env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        **(env or {}),
    )
    cmd = [sys.executable, __file__, json.dumps(spec)]
    if not wait:
        return subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kill_during_run(work: Path, overrides: list[str], kill_at: int, timeout: float) -> None:
    """Starts a run of ``TINY`` with ``overrides`` into ``work`` and SIGKILLs it once its
    metrics hold ``kill_at`` rows; asserts it was killed (not finished) before that step."""
    import signal
    import time

    proc = run({"overrides": overrides, "workdir": str(work)}, wait=False)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_at:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a multi-process job's coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_rel_err(a, b) -> float:
    """``max |a − b| / |b|`` elementwise."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def params_to_numpy(params) -> dict[str, object]:
    """``{"blocks/0/mixer/q_proj/kernel": np.ndarray, …}`` (host copies)."""
    import jax
    import numpy as np

    from memarch.train.mesh import path_str

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {path_str(p): np.asarray(x) for p, x in flat}


def _main(spec: dict) -> None:
    import jax
    import numpy as np
    from flax import nnx

    from memarch.train.config import apply_overrides
    from memarch.train.trainer import train

    cfg = apply_overrides(TINY, spec.get("overrides", []))
    res = train(
        cfg, workdir=spec.get("workdir"), resume=spec.get("resume", False), log=lambda s: None
    )
    params = nnx.to_pure_dict(nnx.state(res.model, nnx.Param))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
        return
    host = params_to_numpy(params)
    if spec.get("params_out"):
        np.savez(spec["params_out"], **host)
    specs = (
        {
            k: str(v.sharding.spec)
            for k, v in (
                ("q_proj", res.model.blocks[1].mixer.q_proj.kernel[...]),
                ("embedding", res.model.embed.embedding[...]),
            )
        }
        if jax.process_count() == 1
        else {}
    )
    print(
        json.dumps(
            {
                "losses": [h["loss"] for h in res.history],
                "specs": specs,
                "devices": jax.device_count(),
                "final_step": res.final_step,
            }
        )
    )


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))

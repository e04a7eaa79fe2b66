"""Ahead-of-time compilation of the pod configs for TPU pods, on this CPU host (no TPU).

    python experiments/compile_pod_configs.py [--topologies v5e:16x16,v5p:4x4x4] [--only NAME]

Compiles the train step of configs/lm_340m_hybrid.py, of configs/recall_vs_ratio_pod.py's
text cells (Gated DeltaNet 3:1 — its base —, GLA 3:1 and the all-attention Transformer) and of
configs/lm_1p3b_hybrid.py, each with the config's own mesh (FSDP over every chip), for v5e-256
(``v5e:16x16``), v4-128 (``v4:4x4x4``, 64 chips) and v5p-128 (``v5p:4x4x4``, 64 chips), through
:func:`memarch.compile.compile_config`. Each cell records its start, so a process killed while
compiling (a v4 cell needs more than this 24 GiB host's memory) is named in the table. Writes each cell's full report under experiments/results/compile_tpu/<cell>/ and
experiments/results/compile_tpu.md, the table of every cell reported there so far (rewritten
after every cell: a long run leaves a partial table, and ``--only`` adds to it).

Columns: per-chip memory (XLA's memory analysis: arguments + outputs − aliased + temporaries +
code) against HBM; model FLOPs per step (:mod:`memarch.compile.flops`) and XLA's count (per
chip × chips; it includes the optimiser and recomputation); XLA's estimated step time and the
MFU bound it implies; compile time on this host (2 shared CPU cores: an upper bound); the
compiling process's peak host memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import jax

from memarch.compile import compile_config, write_report
from memarch.compile.aot import GIB
from memarch.train.config import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "compile_tpu.md"
CELLS_DIR = ROOT / "experiments" / "results" / "compile_tpu"

# (name, config file, overrides)
CELLS = [
    ("lm_340m_hybrid", "configs/lm_340m_hybrid.py", []),
    ("lm_1p3b_hybrid", "configs/lm_1p3b_hybrid.py", []),
    ("ratio_pod attention", "configs/recall_vs_ratio_pod.py", ["model.ratio=0"]),
    ("ratio_pod gla 3:1", "configs/recall_vs_ratio_pod.py", ["model.linear_mixer=gla"]),
    # the base cell: the same model and batch as lm_340m_hybrid
    ("ratio_pod gdn 3:1", "configs/recall_vs_ratio_pod.py", []),
]
TOPOLOGIES = ["v5e:16x16", "v4:4x4x4", "v5p:4x4x4"]


def row(name: str, data: dict) -> dict:
    """One table row from a cell's JSON report (:func:`memarch.compile.report.to_json`)."""
    train = data["steps"]["train"]
    memory = train["memory"]
    return {
        "cell": name,
        "topology": data["topology"],
        "chips": data["num_chips"],
        "params_M": data["params"] / 1e6,
        "mesh": data["mesh"],
        "batch": f"{data['batch_size']}×{data['seq_len']}",
        "remat": data["remat"],
        "mem_GiB": memory["total"] / GIB,
        "args_GiB": memory["arguments"] / GIB,
        "temp_GiB": memory["temporaries"] / GIB,
        "hbm_GiB": data["hbm_bytes"] / GIB,
        "model_TFLOP": data["model_flops"]["total"] / 1e12,
        "xla_TFLOP": train["xla_flops"] * data["num_chips"] / 1e12,
        "xla_step_ms": None
        if data["step_time"]["seconds"] is None
        else data["step_time"]["seconds"] * 1e3,
        "mfu_bound": data["mfu_bound"],
        # the step time at 100 % MFU: model FLOPs over the slice's bf16 peak
        "ideal_ms": data["model_flops"]["total"]
        / (data["num_chips"] * data["chip"]["peak_bf16_tflops"] * 1e12)
        * 1e3,
        "collectives": train["collectives"],
        "warnings": train["warnings"],
        "compile_s": train["compile_seconds"],
    }


def cell_dir(name: str) -> Path:
    return CELLS_DIR / name.replace(" ", "_").replace(":", "-")


def all_rows() -> tuple[list[dict], list[str], list[str]]:
    """Rows of every cell compiled so far (this run or an earlier one), in table order; the
    recorded failures (an error, or a process that started a cell and never finished it: killed,
    e.g. by the host running out of memory); the cells not tried yet."""
    rows, failures, missing = [], [], []
    for topology in TOPOLOGIES:
        for name, _, _ in CELLS:
            stem = f"compile_{topology.replace(':', '_')}"
            path = cell_dir(name) / f"{stem}.json"
            failed = cell_dir(name) / f"{stem}.failed.txt"
            started = cell_dir(name) / f"{stem}.started.txt"
            if path.is_file():
                host = cell_dir(name) / f"{stem}.host.json"
                rows.append(row(name, json.loads(path.read_text())))
                rows[-1]["host_GiB"] = (
                    json.loads(host.read_text())["peak_rss_bytes"] / GIB if host.is_file() else None
                )
            elif failed.is_file():
                failures.append(f"{name} on {topology}: {failed.read_text().strip()}")
            elif started.is_file():
                failures.append(
                    f"{name} on {topology}: {started.read_text().strip()}, no result: still "
                    "compiling, or its process was killed (e.g. the host ran out of memory)"
                )
            else:
                missing.append(f"{name} on {topology}")
    return rows, failures, missing


def table(rows: list[dict], failures: list[str], missing: list[str]) -> str:
    """The Markdown table of ``rows``, the list of ``failures`` and the cells not tried."""
    lines = [
        "# Pod configs compiled ahead of time for TPU (train step)",
        "",
        f"Host: {platform.machine()} CPU, jax {jax.__version__}; libtpu's compile-only "
        "topologies, no TPU attached. Produced by experiments/compile_pod_configs.py.",
        "",
        "| cell | topology | chips | params | mesh d×f×t | batch | remat | mem/chip GiB (args, "
        "temp) | HBM GiB | fits | model TFLOP/step | XLA TFLOP/step | step ms at 100 % MFU | "
        "XLA step ms | MFU bound | "
        "collectives ar/ag/rs/a2a/cp | sharding warnings | compile s | host GiB |",
        "|" + "---|" * 19,
    ]
    for r in rows:
        m = r["mesh"]
        c = r["collectives"]
        ms = "–" if r["xla_step_ms"] is None else f"{r['xla_step_ms']:.0f}"
        mfu = "–" if r["mfu_bound"] is None else f"{r['mfu_bound']:.0%}"
        lines.append(
            f"| {r['cell']} | {r['topology']} | {r['chips']} | {r['params_M']:.0f}M | "
            f"{m['data']}×{m['fsdp']}×{m['tensor']} | {r['batch']} | {r['remat']} | "
            f"{r['mem_GiB']:.2f} ({r['args_GiB']:.2f}, {r['temp_GiB']:.2f}) | {r['hbm_GiB']:.0f} | "
            f"{'yes' if r['mem_GiB'] <= r['hbm_GiB'] else '**no**'} | {r['model_TFLOP']:.0f} | "
            f"{r['xla_TFLOP']:.0f} | {r['ideal_ms']:.1f} | {ms} | {mfu} | "
            f"{c['all-reduce']}/{c['all-gather']}/{c['reduce-scatter']}/{c['all-to-all']}/"
            f"{c['collective-permute']} | "
            f"{len(r['warnings'])} | {r['compile_s']:.0f} | "
            + ("–" if r.get("host_GiB") is None else f"{r['host_GiB']:.1f}")
            + " |"
        )
    if failures:
        lines += ["", "Failed cells:", ""] + [f"- {f}" for f in failures]
    if missing:
        lines += ["", "Not compiled yet (`--only NAME --topologies T`):", ""]
        lines += [f"- {m}" for m in missing]
    lines += [
        "",
        "MFU bound: model FLOPs / (XLA's estimated step time × chips × bf16 peak). XLA's "
        "estimate (`optimal_seconds` of libtpu's cost analysis) is a roofline lower bound on the "
        "time, so the MFU is an upper bound; libtpu gives it for some programs only (here some "
        "v5p ones), '–' elsewhere. The step time at 100 % MFU (model FLOPs / (chips × peak)) is "
        "the floor for every cell; `memarch compile --step-time S` reports the MFU at a measured "
        "step time S.",
        "",
        "Collectives are HLO instructions after XLA's combiners (one instruction may carry many "
        "tensors). On v5p the partitioner writes the weights' FSDP all-gathers as all-reduces of "
        "zero-padded buffers (combined into a few tuple all-reduces), so no all-gather appears "
        "there; on v5e they stay all-gathers.",
        "",
        "v4-128 (`v4:4x4x4`): its one tried cell needed more host memory than this 24 GiB host "
        "has (see the failed cells), so the other v4 cells were not tried; v5p-128 "
        "(`v5p:4x4x4`, also 64 chips) is the second topology. Per-cell reports (memory of every "
        "buffer class, all warnings): experiments/results/compile_tpu/. Host GiB: the compiling "
        "process's peak resident memory (– where it was not recorded); compile s: wall time on "
        "this 2-core host, often beside other jobs (an upper bound).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--only", help="compile only the cells whose name contains this")
    p.add_argument("--table-only", action="store_true", help="compile nothing; rewrite the table")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every cell")
    args = p.parse_args()
    if not args.table_only:
        for topology in args.topologies.split(","):
            for name, path, overrides in CELLS:
                if args.only and args.only not in name:
                    continue
                cfg = apply_overrides(load_config(ROOT / path), overrides + args.overrides)
                stem = f"compile_{topology.replace(':', '_')}"
                cell_dir(name).mkdir(parents=True, exist_ok=True)
                (cell_dir(name) / f"{stem}.started.txt").write_text(
                    f"started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
                )
                try:
                    report = compile_config(cfg, topology, steps=("train",), log=print)
                except Exception as err:  # keep going: the table names the failure
                    cell_dir(name).mkdir(parents=True, exist_ok=True)
                    (cell_dir(name) / f"{stem}.failed.txt").write_text(
                        f"{type(err).__name__}: {err}\n"
                    )
                    print(f"{name} on {topology}: {type(err).__name__}: {err}", flush=True)
                else:
                    (cell_dir(name) / f"{stem}.failed.txt").unlink(missing_ok=True)
                    write_report(report, cell_dir(name))
                    # this process's peak resident memory so far (KiB on Linux): an upper bound
                    # on the cell's, since cells run one after another
                    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                    (cell_dir(name) / f"{stem}.host.json").write_text(
                        json.dumps({"peak_rss_bytes": rss, "cpus": os.cpu_count()}) + "\n"
                    )
                    print(f"{name} on {topology}: done (peak host memory {rss / GIB:.1f} GiB)")
                finally:
                    (cell_dir(name) / f"{stem}.started.txt").unlink(missing_ok=True)
                OUT.write_text(table(*all_rows()))
    OUT.write_text(table(*all_rows()))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

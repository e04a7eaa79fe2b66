"""The compile report: per-chip memory against the chip's HBM, FLOPs, an MFU bound,
collectives and XLA's sharding warnings, as Markdown and JSON in the run directory.

MFU bound. At a step time ``t`` (XLA's estimate of the train step, ``cost_analysis()
["optimal_seconds"]``, or one the user gives), model FLOPs utilisation is
``model_flops / (t · chips · peak)`` with the model FLOPs of :mod:`memarch.compile.flops` and
the chip's bf16 peak (:data:`memarch.compile.topology.CHIPS`). XLA's estimate is a lower bound
on the time (a roofline over the HLO), so the MFU it gives is an upper bound.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from memarch.compile.aot import GIB, CompileReport, MemoryFitError, StepReport
from memarch.errors import UserError


def hbm_bytes(report: CompileReport) -> int:
    return int(report.chip.hbm_gib * GIB)


def step_time(report: CompileReport, given: float | None = None) -> tuple[float | None, str]:
    """``(seconds, source)``: ``given`` if set, else XLA's estimate of the train step."""
    if given is not None:
        if given <= 0:
            raise UserError(f"--step-time must be > 0 seconds; got {given}")
        return float(given), "given"
    train = report.steps.get("train")
    if train is not None and train.xla_seconds:
        return train.xla_seconds, "XLA estimate"
    return None, "none"


def mfu_bound(report: CompileReport, seconds: float | None) -> float | None:
    """``model_flops / (seconds · chips · peak bf16)``; None without a time."""
    if not seconds:
        return None
    peak = report.chip.peak_bf16_tflops * 1e12 * report.num_chips
    return report.model_flops.total / (seconds * peak)


def too_big(report: CompileReport) -> list[StepReport]:
    """The steps whose per-chip total exceeds the chip's HBM."""
    return [s for s in report.steps.values() if s.total_bytes > hbm_bytes(report)]


def check_fits(report: CompileReport) -> None:
    """Raises :class:`MemoryFitError` naming each step's per-chip memory and the HBM when a
    step does not fit."""
    over = too_big(report)
    if not over:
        return
    parts = "; ".join(
        f"{s.name} step needs {s.total_bytes / GIB:.2f} GiB per chip (arguments "
        f"{s.memory['arguments'] / GIB:.2f}, temporaries {s.memory['temporaries'] / GIB:.2f})"
        for s in over
    )
    raise MemoryFitError(
        f"{report.config} does not fit {report.topology}: {parts}, but a {report.chip.name} chip "
        f"has {report.chip.hbm_gib:g} GiB HBM (shard more: mesh.fsdp, mesh.tensor; or lower "
        "batch_size, raise grad_accum_steps, set model.remat)"
    )


def to_json(report: CompileReport, given_step_time: float | None = None) -> dict:
    seconds, source = step_time(report, given_step_time)
    out = dataclasses.asdict(report)
    out["model_flops"]["total"] = report.model_flops.total
    out["hbm_bytes"] = hbm_bytes(report)
    out["fits"] = not too_big(report)
    out["step_time"] = {"seconds": seconds, "source": source}
    out["mfu_bound"] = mfu_bound(report, seconds)
    return out


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def to_markdown(report: CompileReport, given_step_time: float | None = None) -> str:
    seconds, source = step_time(report, given_step_time)
    mfu = mfu_bound(report, seconds)
    f = report.model_flops
    lines = [
        f"# {report.config} on {report.topology}",
        "",
        f"{report.num_chips} × TPU {report.chip.name} ({report.chip.hbm_gib:g} GiB HBM, "
        f"{report.chip.peak_bf16_tflops:g} bf16 TFLOP/s per chip); mesh data={report.mesh['data']}"
        f" fsdp={report.mesh['fsdp']} tensor={report.mesh['tensor']}; batch {report.batch_size} × "
        f"{report.seq_len} tokens; {report.compute_dtype} compute; remat {report.remat}; "
        f"{report.params / 1e6:.1f}M parameters.",
        "",
        "## Memory per chip (GiB)",
        "",
        "| step | arguments | outputs | aliased | temporaries | code | total | HBM | fits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    hbm = hbm_bytes(report)
    for s in report.steps.values():
        m = s.memory
        lines.append(
            f"| {s.name} | {_gib(m['arguments'])} | {_gib(m['outputs'])} | {_gib(m['aliased'])} | "
            f"{_gib(m['temporaries'])} | {_gib(m['generated_code'])} | {_gib(m['total'])} | "
            f"{_gib(hbm)} | {'yes' if m['total'] <= hbm else '**no**'} |"
        )
    lines += [
        "",
        "## FLOPs and MFU bound",
        "",
        f"- model FLOPs per train step (all chips): {f.total:.4g} = dense 6·N·tokens "
        f"{f.dense:.4g} (N = {f.matmul_params / 1e6:.1f}M) + attention {f.attention:.4g} "
        f"+ memory state {f.state:.4g}",
    ]
    for s in report.steps.values():
        est = f", XLA's estimated time {s.xla_seconds * 1e3:.2f} ms" if s.xla_seconds else ""
        lines.append(
            f"- {s.name} step: XLA's cost analysis {s.xla_flops:.4g} FLOPs per chip "
            f"({s.xla_flops * report.num_chips:.4g} on all chips){est}; compiled in "
            f"{s.compile_seconds:.1f} s"
        )
    if mfu is not None:
        lines.append(f"- MFU bound at a step time of {seconds * 1e3:.2f} ms ({source}): {mfu:.1%}")
    else:
        lines.append("- MFU bound: no step time (give --step-time)")
    lines += ["", "## Collectives", "", "| step | " + " | ".join(_ops(report)) + " |"]
    lines.append("|---|" + "---|" * len(_ops(report)))
    for s in report.steps.values():
        lines.append(
            f"| {s.name} | " + " | ".join(str(s.collectives[o]) for o in _ops(report)) + " |"
        )
    lines += ["", "## XLA sharding warnings", ""]
    warned = [(s.name, w) for s in report.steps.values() for w in s.warnings]
    lines += [f"- {name}: {w}" for name, w in warned] or ["none"]
    return "\n".join(lines) + "\n"


def _ops(report: CompileReport) -> list[str]:
    first = next(iter(report.steps.values()), None)
    return list(first.collectives) if first else []


def write_report(
    report: CompileReport, directory: str | Path, given_step_time: float | None = None
) -> tuple[Path, Path]:
    """Writes ``compile_<topology>.md`` and ``.json`` into ``directory``; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "compile_" + report.topology.replace(":", "_")
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(to_markdown(report, given_step_time))
    js.write_text(json.dumps(to_json(report, given_step_time), indent=2))
    return md, js


__all__ = [
    "MemoryFitError",
    "check_fits",
    "hbm_bytes",
    "mfu_bound",
    "step_time",
    "to_json",
    "to_markdown",
    "too_big",
    "write_report",
]

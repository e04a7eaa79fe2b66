"""The report: memory fit against HBM (one clear error naming both), MFU bound, Markdown/JSON."""

import json

import pytest

from memarch.compile.aot import GIB, CompileReport, StepReport
from memarch.compile.flops import ModelFlops
from memarch.compile.report import (
    MemoryFitError,
    check_fits,
    mfu_bound,
    step_time,
    to_markdown,
    write_report,
)
from memarch.compile.topology import CHIPS


def _report(total_gib: float, xla_seconds: float | None = 0.5) -> CompileReport:
    total = int(total_gib * GIB)
    memory = {
        "arguments": total // 2,
        "outputs": total // 2,
        "aliased": total // 2,
        "temporaries": total - total // 2,
        "generated_code": 0,
        "total": total,
    }
    step = StepReport(
        name="train",
        memory=memory,
        xla_flops=1e15,
        xla_seconds=xla_seconds,
        collectives={"all-reduce": 2, "all-gather": 5},
        warnings=["Involuntary full rematerialization. …"],
        compile_seconds=3.0,
    )
    return CompileReport(
        config="lm",
        topology="v5e:2x2",
        chip=CHIPS["v5e"],
        num_chips=4,
        mesh={"data": 1, "fsdp": 4, "tensor": 1},
        batch_size=8,
        seq_len=2048,
        compute_dtype="bfloat16",
        remat="none",
        params=10**9,
        model_flops=ModelFlops(matmul_params=10**9, dense=3e13, attention=5e12, state=5e12),
        steps={"train": step},
    )


def test_a_step_over_hbm_names_its_memory_and_the_hbm():
    check_fits(_report(15.9))
    with pytest.raises(MemoryFitError, match=r"train step needs 17\.50 GiB per chip .* 16 GiB HBM"):
        check_fits(_report(17.5))


def test_mfu_bound_at_xla_estimate_or_given_time():
    r = _report(1.0)
    assert step_time(r) == (0.5, "XLA estimate") and step_time(r, 2.0) == (2.0, "given")
    # 4e13 model FLOPs / (0.5 s · 4 chips · 197e12 FLOP/s)
    assert mfu_bound(r, 0.5) == pytest.approx(4e13 / (0.5 * 4 * 197e12))
    assert mfu_bound(_report(1.0, None), step_time(_report(1.0, None))[0]) is None


def test_markdown_and_json(tmp_path):
    md, js = write_report(_report(17.5), tmp_path)
    text = md.read_text()
    assert "| train | 8.75 | 8.75 | 8.75 | 8.75 | 0.00 | 17.50 | 16.00 | **no** |" in text
    assert "- train: Involuntary full rematerialization." in text
    assert "MFU bound at a step time of 500.00 ms (XLA estimate): 10.2%" in text
    data = json.loads(js.read_text())
    assert data["fits"] is False and data["steps"]["train"]["collectives"]["all-gather"] == 5
    assert md.name == "compile_v5e_2x2.md" and to_markdown(_report(1.0)).startswith("# lm on")

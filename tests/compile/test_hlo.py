"""Collective counts from HLO text (async start/done pairs counted once)."""

# ruff: noqa: E501 (log and HLO text quoted verbatim)

from memarch.compile.hlo import collective_counts

HLO = """\
ENTRY %main (p: bf16[256,1024]) -> bf16[] {
  %all-gather-start = (bf16[256,1024], bf16[1024,1024]) all-gather-start(bf16[256,1024] %p), dimensions={0}
  %all-gather-done = bf16[1024,1024] all-gather-done((bf16[256,1024], bf16[1024,1024]) %all-gather-start)
  %fusion = bf16[] fusion(bf16[1024,1024] %all-gather-done), kind=kLoop, calls=%fused
  %all-reduce = f32[] all-reduce(f32[] %fusion), replica_groups={{0,1,2,3}}, to_apply=%add
  %reduce-scatter.1 = f32[8] reduce-scatter(f32[32] %x), dimensions={0}
  %cp = f32[8] collective-permute(f32[8] %reduce-scatter.1), source_target_pairs={{0,1}}
  ROOT %all-reduce.2 = f32[] all-reduce(f32[] %all-reduce), to_apply=%add
}
"""


def test_counts_each_collective_once():
    assert collective_counts(HLO) == {
        "all-reduce": 2,
        "all-gather": 1,
        "reduce-scatter": 1,
        "all-to-all": 0,
        "collective-permute": 1,
    }

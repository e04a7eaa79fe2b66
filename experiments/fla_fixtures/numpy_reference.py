"""Torch-free float64 numpy forward of the fla 0.6.0 models in tests/convert/fixtures/fla.

An executable statement of the fla conventions the converter relies on (tensor names, config
fields, norm epsilons, activations, scales, MoM routing with time-ordered memories, hybrid
attention layers), written from fla's source and checked against the fixtures: for every fixture
it prints the relative RMS error of its logits against fla's recorded logits and whether its
greedy continuation (full re-forward, argmax) equals fla's. Slow, per sequence, no batching:
a reference for debugging a conversion, never run by CI. Needs only numpy and safetensors::

    .venv/bin/python experiments/fla_fixtures/numpy_reference.py [FIXTURE ...]

Shapes: one sequence at a time; activations [T, C], per-head tensors [T, H, d]; torch Linear
weights are [out, in] (y = x W^T + b); conv weights [C, 1, W].
"""

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2] / "tests" / "convert" / "fixtures" / "fla"


def rms(x, w, eps):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w."""
    y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return y * w if w is not None else y


def silu(x):
    return x / (1 + np.exp(-x))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0, x)


def logsigmoid(x):
    return -np.logaddexp(0, -x)


def lin(x, W, b=None):
    y = x @ W.T
    return y + b if b is not None else y


def conv(x, w, b=None, act=False):
    """Depthwise causal conv, zero history: y[t] = sum_j w[:, 0, j] x[t-W+1+j] (+ b), SiLU if act"""
    W = w.shape[-1]
    T = x.shape[0]
    xp = np.concatenate([np.zeros((W - 1, x.shape[1])), x], 0)
    y = sum(xp[j : j + T] * w[:, 0, j] for j in range(W))
    if b is not None:
        y = y + b
    return silu(y) if act else y


def l2(x):
    """fla's in-kernel q/k L2 norm: x / sqrt(sum(x^2) + 1e-6)."""
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


def heads(x, d):
    return x.reshape(x.shape[0], -1, d)


def gla_rec(q, k, v, gk, scale):
    """S_t = diag(exp gk_t) S_{t-1} + k_t v_t^T; o_t = scale q_t S_t; q, k, gk [T,H,K]; [T,H,V]"""
    T, H, K = q.shape
    S = np.zeros((H, K, v.shape[-1]))
    o = np.zeros((T, H, v.shape[-1]))
    for t in range(T):
        S = S * np.exp(gk[t])[..., None] + k[t][..., None] * v[t][:, None, :]
        o[t] = np.einsum("hk,hkv->hv", q[t] * scale, S)
    return o


def gdn_rec(q, k, v, g, beta, scale):
    """S <- exp(g_t) S; S += beta_t k_t (v_t - S^T k_t)^T; o_t = (scale q_t) S. g, beta [T,H]."""
    T, H, K = q.shape
    S = np.zeros((H, K, v.shape[-1]))
    o = np.zeros((T, H, v.shape[-1]))
    for t in range(T):
        S = S * np.exp(g[t])[:, None, None]
        u = beta[t][:, None] * (v[t] - np.einsum("hkv,hk->hv", S, k[t]))
        S = S + k[t][..., None] * u[:, None, :]
        o[t] = np.einsum("hk,hkv->hv", q[t] * scale, S)
    return o


def attn(x, p, pre, D, spec, qk_norm=False):
    """fla.layers.attn.Attention: GQA, NeoX RoPE, causal (+ window of W keys incl. itself)."""
    H = spec["num_heads"]
    Hkv = spec.get("num_kv_heads") or H
    d = D // H
    q = heads(lin(x, p[pre + "q_proj.weight"], p.get(pre + "q_proj.bias")), d)
    k = heads(lin(x, p[pre + "k_proj.weight"], p.get(pre + "k_proj.bias")), d)
    v = heads(lin(x, p[pre + "v_proj.weight"], p.get(pre + "v_proj.bias")), d)
    if qk_norm:
        q = rms(q, p[pre + "q_norm.weight"], 1e-5)
        k = rms(k, p[pre + "k_norm.weight"], 1e-5)
    T = x.shape[0]
    theta = spec.get("rope_theta") or 10000.0
    inv = 1 / theta ** (np.arange(0, d, 2) / d)
    ang = np.arange(T)[:, None] * inv[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(z):
        z1, z2 = z[..., : d // 2], z[..., d // 2 :]
        return np.concatenate([z1 * cos - z2 * sin, z2 * cos + z1 * sin], -1)

    q, k = rope(q), rope(k)
    k = np.repeat(k, H // Hkv, axis=1)
    v = np.repeat(v, H // Hkv, axis=1)
    s = np.einsum("thd,shd->hts", q, k) * d**-0.5
    i, j = np.arange(T)[:, None], np.arange(T)[None]
    ok = j <= i
    W = spec.get("window_size")
    if W:
        ok &= j > i - W
    s = np.where(ok, s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    o = np.einsum("hts,shd->thd", s, v).reshape(T, D)
    return lin(o, p[pre + "o_proj.weight"])


def mixer(fam, c, p, pre, x, li, lbs):
    """The family's token mixer of layer li on the normed input x [T, D]."""
    D = c["hidden_size"]
    eps = c["norm_eps"]
    conv_on = c.get("use_short_conv")
    if fam == "gla":
        H = c["num_heads"]
        kd, vd = int(D * c["expand_k"]), int(D * c["expand_v"])
        hk, hv = kd // H, vd // H
        q, k, v = (lin(x, p[pre + n + "_proj.weight"]) for n in "qkv")
        if conv_on:
            q, k, v = (
                conv(z, p[pre + n + "_conv1d.weight"], None, True)
                for z, n in zip((q, k, v), "qkv", strict=True)
            )
        gk = lin(
            lin(x, p[pre + "gk_proj.0.weight"]),
            p[pre + "gk_proj.1.weight"],
            p[pre + "gk_proj.1.bias"],
        )
        gk = logsigmoid(gk) / 16
        o = gla_rec(heads(q, hk), heads(k, hk), heads(v, hv), heads(gk, hk), hk**-0.5)
        g = heads(lin(x, p[pre + "g_proj.weight"]), hv)
        o = rms(o, p[pre + "g_norm_swish_gate.weight"], eps) * silu(g)
        return lin(o.reshape(len(x), -1), p[pre + "o_proj.weight"])
    if fam == "delta_net":
        H = c["num_heads"]
        kd, vd = int(D * c["expand_k"]), int(D * c["expand_v"])
        hk, hv = kd // H, vd // H
        q, k, v = (
            conv(lin(x, p[pre + n + "_proj.weight"]), p[pre + n + "_conv1d.weight"], None, True)
            for n in "qkv"
        )
        beta = sigmoid(lin(x, p[pre + "b_proj.weight"]))
        if c["allow_neg_eigval"]:
            beta = beta * 2
        o = gdn_rec(
            l2(heads(q, hk)), l2(heads(k, hk)), heads(v, hv), np.zeros_like(beta), beta, hk**-0.5
        )
        if c["use_gate"]:
            o = rms(o, p[pre + "o_norm.weight"], eps) * silu(
                heads(lin(x, p[pre + "g_proj.weight"]), hv)
            )
        else:
            o = rms(o, p[pre + "o_norm.weight"], eps)
        return lin(o.reshape(len(x), -1), p[pre + "o_proj.weight"])
    if fam == "gated_deltanet":
        H = c["num_heads"]
        HV = c.get("num_v_heads") or H
        hk = c["head_dim"]
        hv = int(hk * c["expand_v"])
        q, k, v = (
            conv(lin(x, p[pre + n + "_proj.weight"]), p[pre + n + "_conv1d.weight"], None, True)
            for n in "qkv"
        )
        g = -np.exp(p[pre + "A_log"]) * softplus(
            lin(x, p[pre + "a_proj.weight"]) + p[pre + "dt_bias"]
        )
        beta = sigmoid(lin(x, p[pre + "b_proj.weight"]))
        q, k = l2(heads(q, hk)), l2(heads(k, hk))
        q, k = np.repeat(q, HV // H, 1), np.repeat(k, HV // H, 1)
        o = gdn_rec(q, k, heads(v, hv), g, beta, hk**-0.5)
        o = rms(o, p[pre + "o_norm.weight"], eps) * silu(
            heads(lin(x, p[pre + "g_proj.weight"]), hv)
        )
        return lin(o.reshape(len(x), -1), p[pre + "o_proj.weight"])
    if fam == "hgrn2":
        er = c["expand_ratio"]
        H = D // er
        q, f, i = (lin(x, p[pre + n + "_proj.weight"]) for n in "qfi")
        if conv_on:
            q, f, i = (
                conv(z, p[pre + n + "_conv1d.weight"])
                for z, n in zip((q, f, i), "qfi", strict=True)
            )
        q = silu(q)
        g = logsigmoid(f)
        if li > 0:
            lb = lbs[li]
            g = np.logaddexp(np.log(lb), np.log1p(-lb) + g)
        k = 1 - np.exp(g)
        o = gla_rec(heads(q, er), heads(k, er), heads(i, D // H), heads(g, er), er**-0.5)
        o = rms(o.reshape(len(x), -1), p[pre + "g_norm.weight"], 1e-5)
        return lin(o, p[pre + "o_proj.weight"])
    if fam == "linear_attn":
        H = c["num_heads"]
        hk = int(D * c["expand_k"]) // H
        hv = int(D * c["expand_v"]) // H
        q, k, v = (
            heads(lin(x, p[pre + "q_proj.weight"]), hk),
            heads(lin(x, p[pre + "k_proj.weight"]), hk),
            heads(lin(x, p[pre + "v_proj.weight"]), hv),
        )
        fm = c["feature_map"]
        if fm == "elementwise_product":

            def had(z, n):
                return lin(
                    z,
                    p[pre + f"feature_map_{n}.layer1.weight"],
                    p[pre + f"feature_map_{n}.layer1.bias"],
                ) * lin(
                    z,
                    p[pre + f"feature_map_{n}.layer2.weight"],
                    p[pre + f"feature_map_{n}.layer2.bias"],
                )

            q, k = had(q, "q"), had(k, "k")
        elif fm == "elu":
            q, k = np.where(q > 0, q + 1, np.exp(q)), np.where(k > 0, k + 1, np.exp(k))
        o = gla_rec(q, k, v, np.zeros_like(q), hk**-0.5)
        if c["norm_feature_map"]:
            o = o / ((q * hk**-0.5 * np.cumsum(k, 0)).sum(-1, keepdims=True) + 1e-10)
        o = rms(o, p[pre + "norm.weight"], eps)
        return lin(o.reshape(len(x), -1), p[pre + "o_proj.weight"])
    if fam == "mom":
        H, hk = c["num_heads"], c["head_dim"]
        hv = int(hk * c["expand_v"])
        M, K = c["num_memories"], c["topk"]
        logits = lin(x, p[pre + "gate.weight"])
        sc = np.exp(logits - logits.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        top = np.argsort(-sc, -1, kind="stable")[:, :K]
        w = np.take_along_axis(sc, top, -1)
        w /= w.sum(-1, keepdims=True)
        A, dt = p[pre + "A_log"], p[pre + "dt_bias"]

        def gdn_path(xs, kw, vw, bw, aw):
            q = conv(lin(xs, p[pre + "q_proj.weight"]), p[pre + "q_conv1d.weight"], None, True)
            k = conv(lin(xs, kw), p[pre + "k_conv1d.weight"], None, True)
            v = conv(lin(xs, vw), p[pre + "v_conv1d.weight"], None, True)
            beta = sigmoid(lin(xs, bw))
            g = -np.exp(A) * softplus(lin(xs, aw) + dt)
            return gdn_rec(l2(heads(q, hk)), l2(heads(k, hk)), heads(v, hv), g, beta, hk**-0.5)

        T = len(x)
        o = np.zeros((T, H, hv))
        for m in range(M):
            sel = np.nonzero((top == m).any(-1))[0]
            if len(sel) == 0:
                continue
            om = gdn_path(
                x[sel],
                p[pre + f"k_proj.{m}.weight"],
                p[pre + f"v_proj.{m}.weight"],
                p[pre + f"b_proj.{m}.weight"],
                p[pre + f"a_proj.{m}.weight"],
            )
            wm = (w * (top == m)).sum(-1)[sel]
            o[sel] += om * wm[:, None, None]
        if c["shared_mem"]:
            o += gdn_path(
                x,
                p[pre + "shared_k.weight"],
                p[pre + "shared_v.weight"],
                p[pre + "shared_b.weight"],
                p[pre + "shared_a.weight"],
            )
        o = rms(o, p[pre + "o_norm.weight"], eps) * silu(
            heads(lin(x, p[pre + "g_proj.weight"]), hv)
        )
        return lin(o.reshape(T, -1), p[pre + "o_proj.weight"])
    if fam == "transformer":
        return attn(
            x,
            p,
            pre,
            D,
            dict(
                num_heads=c["num_heads"],
                num_kv_heads=c["num_kv_heads"],
                window_size=c["window_size"],
                rope_theta=c["rope_theta"],
            ),
            c["qk_norm"],
        )
    raise ValueError(fam)


def forward(c, p, ids):
    """Logits [T, V] of one sequence ids [T] for config c and tensors p."""
    fam = c["model_type"]
    E = p["model.embeddings.weight"]
    head = p.get("lm_head.weight", E)
    lbs = None
    if fam == "hgrn2" and c["use_lower_bound"]:
        lb = np.exp(p["model.lower_bounds"] - p["model.lower_bounds"].max(0))
        lb /= lb.sum(0)
        lbs = np.cumsum(lb, 0) - lb[0]
    h = E[ids].astype(np.float64)
    spec = c.get("attn")
    for li in range(c["num_hidden_layers"]):
        pre = f"model.layers.{li}."
        a = rms(h, p[pre + "attn_norm.weight"], c["norm_eps"])
        if spec and li in spec["layers"]:
            h = h + attn(a, p, pre + "attn.", c["hidden_size"], spec)
        else:
            h = h + mixer(fam, c, p, pre + "attn.", a, li, lbs)
        m = rms(h, p[pre + "mlp_norm.weight"], c["norm_eps"])
        h = h + lin(
            silu(lin(m, p[pre + "mlp.gate_proj.weight"])) * lin(m, p[pre + "mlp.up_proj.weight"]),
            p[pre + "mlp.down_proj.weight"],
        )
    return rms(h, p["model.norm.weight"], c["norm_eps"]) @ head.T


def main(names: list[str]) -> int:
    """Compare every (or each named) fixture; exit status 1 if one does not match."""
    bad = 0
    for d in sorted(x for x in ROOT.iterdir() if x.is_dir()):
        if names and d.name not in names:
            continue
        c = json.loads((d / "config.json").read_text())
        p = {k: v.astype(np.float64) for k, v in load_file(d / "model.safetensors").items()}
        r = np.load(d / "reference.npz")
        ref = r["logits"]
        out = np.stack([forward(c, p, ids) for ids in r["input_ids"]])
        rel = np.sqrt(((out - ref) ** 2).mean() / (ref**2).mean())
        seq = list(r["greedy_prompt"][0])
        for _ in range(r["greedy_tokens"].shape[1]):
            seq.append(int(forward(c, p, np.array(seq))[-1].argmax()))
        same = seq[len(r["greedy_prompt"][0]) :] == list(r["greedy_tokens"][0])
        bad += int(rel > 1e-5 or not same)
        print(f"{d.name:26s} rel_rms={rel:.2e} greedy_equal={same}")
    return int(bad > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Golden outputs of the turboquant-plus-vllm native checkpoint pipeline, for our bit-exact tests.

Runs on the GPU machine (it has torch 2.11 and safetensors 0.8; no network, no plugin install).
It is an independent re-statement of the plugin's `save_tq3_checkpoint` as ALGORITHMS.md §1–2
describes it, computed with the same torch CPU operations (torch.linalg.norm, torch.searchsorted,
the seed-42 torch.Generator, safetensors.torch.save_file), so that the float32 rounding of every
step is torch's own. Our C++ `tqctl compress --format plugin` must produce the same bytes.

What it writes under --out:
  synthetic-src/         a small seeded BF16/F16/F32/I64 checkpoint with awkward shapes, two shards
  golden/<case>/         the plugin-format output for each case (model*.safetensors, index, tq_config)
  golden/constants.json  torch's signs for G = 64/128/256, codebooks for d = 64/128/256, CPU info
  golden/hashes.json     sha256 of every file of every case

Usage: python3 tools/plugin_reference.py --tiny testdata/models/tq-tiny-qwen3 --out OUT
"""

import argparse
import hashlib
import json
import math
import os
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file

try:
    from scipy import stats as sp_stats  # the plugin's own dependency
except ImportError:  # pragma: no cover - fallback when scipy is missing on the machine
    sp_stats = None

SKIP = ("lm_head", "embed", "norm", "head")


def _cdf(x):
    return sp_stats.norm.cdf(x) if sp_stats else 0.5 * math.erfc(-x / math.sqrt(2.0))


def _sf(x):
    return sp_stats.norm.sf(x) if sp_stats else 0.5 * math.erfc(x / math.sqrt(2.0))


def _pdf(x):
    return sp_stats.norm.pdf(x) if sp_stats else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _ppf(p):
    if sp_stats:
        return float(sp_stats.norm.ppf(p))
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def cond_mean(sigma, a, b):
    a_s = a / sigma if math.isfinite(a) else a
    b_s = b / sigma if math.isfinite(b) else b
    if not math.isfinite(a_s):
        prob = _cdf(b_s)
    elif not math.isfinite(b_s):
        prob = _sf(a_s)
    else:
        prob = _cdf(b_s) - _cdf(a_s)
    if prob < 1e-15:
        if math.isfinite(a) and not math.isfinite(b):
            return a + sigma
        if not math.isfinite(a) and math.isfinite(b):
            return b - sigma
        return (a + b) / 2.0
    return sigma * (_pdf(a_s) - _pdf(b_s)) / prob


def centroids(bits, dim):
    n = 1 << bits
    if bits == 2:
        s = math.sqrt(dim)
        return [-1.51 / s, -0.453 / s, 0.453 / s, 1.51 / s]
    sigma = 1.0 / math.sqrt(dim)
    bnd = [_ppf(i / n) * sigma for i in range(1, n)]
    c = [0.0] * n
    for _ in range(100):
        c[0] = cond_mean(sigma, -math.inf, bnd[0])
        for i in range(1, n - 1):
            c[i] = cond_mean(sigma, bnd[i - 1], bnd[i])
        c[-1] = cond_mean(sigma, bnd[-1], math.inf)
        bnd = [(c[i] + c[i + 1]) / 2 for i in range(n - 1)]
    return sorted(c)


class Quantizer:
    def __init__(self, group, bits):
        self.group = group
        gen = torch.Generator(device="cpu").manual_seed(42)
        self.s1 = (torch.randint(0, 2, (group,), generator=gen) * 2 - 1).float()
        self.s2 = (torch.randint(0, 2, (group,), generator=gen) * 2 - 1).float()
        self.c = torch.tensor(centroids(bits, group), dtype=torch.float32)
        self.b = (self.c[:-1] + self.c[1:]) / 2

    @staticmethod
    def wht(x):
        n = x.shape[1]
        h = 1
        while h < n:
            v = x.view(x.shape[0], n // (2 * h), 2, h)
            a = v[:, :, 0, :].clone()
            b = v[:, :, 1, :].clone()
            v[:, :, 0, :] = a + b
            v[:, :, 1, :] = a - b
            h *= 2
        return x / math.sqrt(n)

    def quantize(self, x):
        x = x.to(torch.float32)
        norms = torch.linalg.norm(x, dim=1)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        y = (x / safe.unsqueeze(1)).clone()
        y *= self.s1.unsqueeze(0)
        y = self.wht(y)
        y *= self.s2.unsqueeze(0)
        idx = torch.searchsorted(self.b, y.contiguous())
        r = self.c[idx].clone()
        r *= self.s2.unsqueeze(0)
        r = self.wht(r)
        r *= self.s1.unsqueeze(0)
        rn = torch.linalg.norm(r, dim=1)
        rn = torch.where(rn > 0, rn, torch.ones_like(rn))
        return idx, norms / rn


def pack(idx, bits):
    v = idx.to(torch.uint8)
    if bits == 4:
        return v[:, 0::2] | (v[:, 1::2] << 4)
    if bits == 2:
        return v[:, 0::4] | (v[:, 1::4] << 2) | (v[:, 2::4] << 4) | (v[:, 3::4] << 6)
    out = torch.zeros(v.shape[0], v.shape[1] // 8 * 3, dtype=torch.uint8)
    for i in range(v.shape[1] // 8):
        p = v[:, 8 * i : 8 * i + 8]
        out[:, 3 * i] = p[:, 0] | (p[:, 1] << 3) | ((p[:, 2] & 3) << 6)
        out[:, 3 * i + 1] = (p[:, 2] >> 2) | (p[:, 3] << 1) | (p[:, 4] << 4) | ((p[:, 5] & 1) << 7)
        out[:, 3 * i + 2] = (p[:, 5] >> 1) | (p[:, 6] << 2) | (p[:, 7] << 5)
    return out


def compress(t, q, bits, group):
    if t.dim() == 3:
        t = t.reshape(-1, t.shape[-1])
    rows, cols = t.shape
    padded_cols = (cols + group - 1) // group * group
    if padded_cols > cols:
        p = torch.zeros(rows, padded_cols, dtype=t.dtype)
        p[:, :cols] = t
        t = p
    idx, norms = q.quantize(t.float().reshape(-1, group))
    return pack(idx, bits).contiguous(), norms.reshape(-1, padded_cols // group).contiguous()


def convert(src, dst, bits, group, max_shard_bytes, original_model):
    os.makedirs(dst, exist_ok=True)
    q = Quantizer(group, bits)
    shards = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    cur, cur_bytes, idx, weight_map, total = {}, 0, 0, {}, 0
    compressed = 0

    def flush():
        nonlocal cur, cur_bytes, idx
        if not cur:
            return
        idx += 1
        name = f"model-{idx:05d}-of-NNNNN.safetensors"
        save_file(cur, os.path.join(dst, name))
        for k in cur:
            weight_map[k] = name
        cur, cur_bytes = {}, 0

    def add(name, t):
        nonlocal cur_bytes, total
        nb = t.numel() * t.element_size()
        if cur_bytes + nb > max_shard_bytes and cur:
            flush()
        cur[name] = t
        cur_bytes += nb
        total += nb

    for shard in shards:
        with safe_open(os.path.join(src, shard), framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                is_w = (name.endswith(".weight") and t.dim() == 2) or (
                    t.dim() == 3 and "expert" in name.lower())
                skip = any(p in name.lower() for p in SKIP)
                large = t.shape[-1] >= 128 or (t.dim() >= 2 and t.shape[-2] >= 128)
                if is_w and not skip and large:
                    packed, norms = compress(t, q, bits, group)
                    add(name + ".tq_packed", packed)
                    add(name + ".tq_norms", norms)
                    compressed += 1
                else:
                    add(name, t.half() if t.is_floating_point() else t)
    flush()
    n = idx
    for old in sorted(set(weight_map.values())):
        new = old.replace("NNNNN", f"{n:05d}")
        os.rename(os.path.join(dst, old), os.path.join(dst, new))
        for k in weight_map:
            if weight_map[k] == old:
                weight_map[k] = new
    if n > 1:
        with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    elif n == 1:
        os.rename(os.path.join(dst, list(set(weight_map.values()))[0]),
                  os.path.join(dst, "model.safetensors"))
    cfg = {"format": "tq3_native", "bits": bits, "group_size": group, "quantizer_seed": 42,
           "compressed_layers": compressed, "original_model": original_model}
    with open(os.path.join(dst, "tq_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def make_synthetic(dst):
    """Awkward shapes and dtypes; two shards with an index."""
    os.makedirs(dst, exist_ok=True)
    g = torch.Generator().manual_seed(7)

    def rn(*shape, dtype=torch.bfloat16, scale=0.02):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    shard1 = {
        "model.embed_tokens.weight": rn(64, 128),
        "model.layers.0.self_attn.q_proj.weight": rn(300, 130),  # K padded to 256
        "model.layers.0.self_attn.small.weight": rn(100, 100),  # too small: passthrough
        "model.layers.0.mlp.gate.weight": rn(8, 256),  # router: the plugin quantizes it
        "model.layers.0.mlp.experts.gate_up_proj": rn(4, 256, 200),  # 3D experts
        "model.layers.0.input_layernorm.weight": rn(128, dtype=torch.float32, scale=1.0),
        "model.layers.0.mlp.experts.3.down_proj.weight": rn(128, 96),
    }
    shard2 = {
        "model.layers.1.self_attn.o_proj.weight": rn(128, 256, dtype=torch.float16),
        "model.layers.1.mlp.up_proj.weight": rn(256, 128, dtype=torch.float32),
        "model.layers.1.mlp.up_proj.bias": rn(256, dtype=torch.float32),
        "model.layers.1.conv1d.weight": rn(256, 128),
        "model.norm.weight": rn(128, scale=1.0),
        "lm_head.weight": rn(64, 128),
        "model.position_ids": torch.arange(5, dtype=torch.int64),
        "model.layers.1.self_attn.k_proj.weight": torch.zeros(128, 128, dtype=torch.bfloat16),
    }
    save_file(shard1, os.path.join(dst, "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(shard2, os.path.join(dst, "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    wm = {k: "model-00001-of-00002.safetensors" for k in shard1}
    wm.update({k: "model-00002-of-00002.safetensors" for k in shard2})
    total = sum(t.numel() * t.element_size() for t in list(shard1.values()) + list(shard2.values()))
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, f, indent=2)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(4)
    synth = os.path.join(a.out, "synthetic-src")
    make_synthetic(synth)
    gold = os.path.join(a.out, "golden")
    cases = {
        "tiny-tq3": (a.tiny, 3, 128, 5 * 1024**3),
        "tiny-tq2": (a.tiny, 2, 128, 5 * 1024**3),
        "tiny-tq4": (a.tiny, 4, 128, 5 * 1024**3),
        "tiny-tq3-shards": (a.tiny, 3, 128, 1024 * 1024),
        "synthetic-tq3": (synth, 3, 128, 5 * 1024**3),
        "synthetic-tq4-shards": (synth, 4, 128, 200 * 1024),
    }
    for case, (src, bits, group, limit) in cases.items():
        convert(src, os.path.join(gold, case), bits, group, limit, "SOURCE")
    consts = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "torch": torch.__version__, "scipy": sp_stats is not None, "signs": {}, "codebooks": {}}
    for group in (64, 128, 256):
        q = Quantizer(group, 3)
        consts["signs"][str(group)] = ["".join("+" if v > 0 else "-" for v in q.s1.tolist()),
                                       "".join("+" if v > 0 else "-" for v in q.s2.tolist())]
        for bits in (2, 3, 4):
            c = torch.tensor(centroids(bits, group), dtype=torch.float32)
            consts["codebooks"][f"{bits}/{group}"] = [float(v) for v in c.tolist()]
    with open(os.path.join(gold, "constants.json"), "w") as f:
        json.dump(consts, f, indent=1)
    hashes = {}
    for case in cases:
        d = os.path.join(gold, case)
        hashes[case] = {fn: sha256(os.path.join(d, fn)) for fn in sorted(os.listdir(d))}
    with open(os.path.join(gold, "hashes.json"), "w") as f:
        json.dump(hashes, f, indent=1, sort_keys=True)
    print(json.dumps({"cpu": consts["cpu_capability"], "scipy": consts["scipy"]}))
    print(json.dumps(hashes, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds small randomly initialised Hugging Face models and their reference outputs.

These models widen the engine's equivalence tests beyond the one trained Qwen3 model
(testdata/models/tq-tiny-qwen3): each exercises config paths the trained model does not have
(attention and MLP biases, tied embeddings, llama3 / yarn / linear RoPE scaling, MQA, a head_dim
that is not hidden/heads, a sliding window, a Qwen3-MoE with softmax-routed experts, a DeepSeek-V3
with yarn RoPE). The weights are random, so the text is meaningless,
but the logits are exactly what transformers computes for them.

Run on a machine with torch and transformers (the GPU machine has both; the CPU does the math):

  python3 tools/make_reference_models.py OUT_DIR testdata/models/tq-tiny-qwen3 [NAME...]

It writes OUT_DIR/<name>/ with config.json, generation_config.json, model.safetensors (BF16),
tokenizer.json + tokenizer_config.json (copied from the tokenizer folder; the vocabulary is
4096 for every model) and reference.json (format "tq-reference-v1", as the trained models'):
  prompts[i].input_ids, last_logits (fp32 logits at the last position), top5_ids,
  position_argmax / position_logsumexp (for every prompt position), greedy_ids (16 tokens,
  cached greedy loop, ties to the lowest id) and greedy_top2_logits (the margins).
Logits are computed in float32 on the CPU from the BF16 weights (exact upcast), eager attention.
"""

import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3MoeConfig

try:
    from transformers import DeepseekV3Config
except ImportError:  # older transformers: the DeepSeek spec is skipped
    DeepseekV3Config = None

VOCAB = 4096


def rope(kind, theta, **kw):
    d = {"rope_type": kind, "rope_theta": theta}
    d.update(kw)
    return d


def make_config(cls, rope_params, **kw):
    """Passes RoPE settings the way the installed transformers expects them."""
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        kw["rope_parameters"] = rope_params
    else:
        kw["rope_theta"] = rope_params["rope_theta"]
        if rope_params["rope_type"] != "default":
            kw["rope_scaling"] = {k: v for k, v in rope_params.items() if k != "rope_theta"}
    return cls(**kw)


SPECS = [
    # Llama 3 style: GQA 3:1, attention + MLP biases, tied embeddings, llama3 RoPE scaling,
    # K = 192 (not a multiple of the TQ group of 128).
    ("ref-llama-bias-tied", LlamaConfig, rope("llama3", 500000.0, factor=8.0, low_freq_factor=1.0,
                                              high_freq_factor=4.0,
                                              original_max_position_embeddings=64),
     dict(vocab_size=VOCAB, hidden_size=192, intermediate_size=512, num_hidden_layers=3,
          num_attention_heads=6, num_key_value_heads=2, head_dim=32, attention_bias=True,
          mlp_bias=True, tie_word_embeddings=True, rms_norm_eps=1e-5,
          max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    # Qwen2: q/k/v biases (no o bias), MQA (1 KV head), yarn RoPE scaling, untied.
    ("ref-qwen2-yarn-mqa", Qwen2Config, rope("yarn", 1000000.0, factor=4.0,
                                             original_max_position_embeddings=128),
     dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
          rms_norm_eps=1e-6, max_position_embeddings=1024, use_sliding_window=False,
          bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    # Mistral: sliding window of 8 tokens, head_dim 48 != hidden/heads, linear RoPE scaling.
    ("ref-mistral-swa", MistralConfig, rope("linear", 10000.0, factor=2.0),
     dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=2, head_dim=48, sliding_window=8,
          tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=512,
          bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    # Qwen3-MoE: q/k norms, 8 softmax-routed experts, top-2 renormalised, layer 0 a dense MLP
    # (mlp_only_layers), layers 1-2 MoE.
    ("ref-qwen3-moe", Qwen3MoeConfig, rope("default", 1000000.0),
     dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=8,
          num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True,
          decoder_sparse_step=1, mlp_only_layers=[0], tie_word_embeddings=False,
          rms_norm_eps=1e-6, max_position_embeddings=512, use_sliding_window=False,
          bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    # DeepSeek-V3 with yarn RoPE (MLA): the rotary attention factor mscale(4, 0.707) /
    # mscale(4, 1.0) and the softmax scale times mscale(4, 1.0)^2; layer 0 dense, layer 1 MoE
    # (4 sigmoid-routed experts + 1 shared, top-2).
    ("ref-deepseek-yarn", DeepseekV3Config, rope("yarn", 10000.0, factor=4.0,
                                                 original_max_position_embeddings=64, beta_fast=32.0,
                                                 beta_slow=1.0, mscale=0.707, mscale_all_dim=1.0),
     dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
          n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
          first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=1.0,
          q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
          v_head_dim=32, rope_interleave=True, rms_norm_eps=1e-6, max_position_embeddings=1024,
          tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
]

PROMPT_LENGTHS = [1, 6, 23, 70]


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 3 and "experts" in name:  # fused experts [E, out, in]
                p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[2] ** 0.5))
            elif p.dim() == 2:
                std = 1.0 / (p.shape[1] ** 0.5)
                if "lm_head" in name or ("embed_tokens" in name and model.config.tie_word_embeddings):
                    std *= 3.0  # sharper logits -> clearer greedy margins
                p.copy_(std * torch.randn(p.shape, generator=gen))
            else:
                raise ValueError(f"unexpected parameter {name} {tuple(p.shape)}")


def floats(t):
    return [float(x) for x in t.tolist()]


def reference(model, ids):
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    last = logits[-1]
    top5 = torch.topk(last, 5)
    # Cached greedy loop, ties to the lowest id (torch.argmax returns the first maximum).
    greedy, margins = [], []
    with torch.no_grad():
        out = model(x, use_cache=True)
        past = out.past_key_values
        step_logits = out.logits[0, -1].float()
        for _ in range(16):
            nxt = int(torch.argmax(step_logits))
            top2 = torch.topk(step_logits, 2).values
            greedy.append(nxt)
            margins.append(floats(top2))
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            step_logits = out.logits[0, -1].float()
        # Cross-check against recomputation without a cache.
        full = model(torch.tensor([ids + greedy[:-1]])).logits[0, len(ids) - 1:].float()
        no_cache = [int(t) for t in torch.argmax(full, dim=-1)]
    return {
        "input_ids": ids,
        "last_logits": floats(last),
        "top5_ids": [int(i) for i in top5.indices],
        "top5_logits": floats(top5.values),
        "position_argmax": [int(i) for i in torch.argmax(logits, dim=-1)],
        "position_logsumexp": floats(torch.logsumexp(logits, dim=-1)),
        "greedy_ids": greedy,
        "greedy_top2_logits": margins,
        "greedy_matches_no_cache": no_cache == greedy,
    }


def check_per_expert(folder):
    """The engine reads per-expert tensors (model.layers.N.mlp.experts.E.gate_proj.weight). A
    transformers version that saves fused 3-D expert tensors ([E, 2I, H] gate|up, [E, H, I] down)
    gets them split here, gate rows first (ALGORITHMS.md §2)."""
    from safetensors.torch import load_file, save_file
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fused = [k for k, t in tensors.items() if "experts" in k and t.dim() == 3]
    if not fused:
        return
    out = {}
    for k, t in tensors.items():
        if k not in fused:
            out[k] = t
            continue
        prefix = k[: k.index("experts") + len("experts")]
        for e in range(t.shape[0]):
            if k.endswith("gate_up_proj"):
                half = t.shape[1] // 2
                out[f"{prefix}.{e}.gate_proj.weight"] = t[e, :half].contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = t[e, half:].contiguous()
            elif k.endswith("down_proj"):
                out[f"{prefix}.{e}.down_proj.weight"] = t[e].contiguous()
            else:
                raise SystemExit(f"{folder}: unknown fused expert tensor {k}")
    save_file(out, path, metadata={"format": "pt"})
    print(folder, "fused expert tensors split:", len(fused))


def main():
    out_dir, tok_dir = sys.argv[1], sys.argv[2]
    only = set(sys.argv[3:])  # optional model names to build (default: all)
    torch.set_num_threads(8)
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator().manual_seed(20261128)
    for name, cls, rope_params, kw in SPECS:
        if only and name not in only:
            continue
        if cls is None:
            print(name, "skipped: this transformers has no config class for it")
            continue
        cfg = make_config(cls, rope_params, **kw)
        model = AutoModelForCausalLM.from_config(cfg).float()
        randomize(model, gen)
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
        check_per_expert(folder)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_dir, f), folder)
        ref_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                         attn_implementation="eager").eval()
        prompts = []
        for n in PROMPT_LENGTHS:
            ids = [int(i) for i in torch.randint(1, VOCAB, (n,), generator=gen)]
            prompts.append(reference(ref_model, ids))
        doc = {
            "format": "tq-reference-v1",
            "model": name,
            "architecture": ref_model.config.architectures[0],
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "compute": {"weights": "model.safetensors (BF16) loaded with dtype=float32",
                        "device": "cpu", "attn_implementation": "eager", "tf32": False,
                        "weights_init": "random (tools/make_reference_models.py), seed 20261128"},
            "prompts": prompts,
        }
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump(doc, f)
        margins = [abs(a - b) for p in prompts for a, b in p["greedy_top2_logits"]]
        print(name, "ok; greedy matches no-cache:",
              all(p["greedy_matches_no_cache"] for p in prompts),
              "min greedy margin %.4g" % min(margins))


if __name__ == "__main__":
    main()

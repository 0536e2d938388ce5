"""Build a tiny random Llama model and tokenizer offline, for real vLLM engines on CPU.

Weights cannot be downloaded on the machines this project is tested on, so
the local stack serves a model made here: the Llama architecture vLLM
knows, with random weights (the answers are noise; the serving behaviour --
batching, KV cache, priorities, metrics -- is real). Written with numpy and
safetensors only, so building it needs neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# A minimal chat template: vLLM's /v1/chat/completions needs one.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class TinyLlama:
    # head_dim must be at least 32 for vLLM's CPU attention kernels (RECIPES.md).
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_position_embeddings: int = 4096
    seed: int = 0


def _corpus() -> list[str]:
    # Enough varied text for a byte-level BPE to learn merges; deterministic.
    words = (
        "the model answers a question about math code and knowledge with short reasoning "
        "agents debate and verify each other while a planner picks the topology and budget "
        "queue depth kv cache pressure latency deadline priority gpu utilisation throughput "
        "solve compute prove function return value integer sum product prime graph tree"
    ).split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=24)) for _ in range(2000)]


def build_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "model_max_length": 4096,
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        )
    )


def build_weights(cfg: TinyLlama) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    h, hd = cfg.hidden_size, cfg.head_dim
    q_out, kv_out = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": w(cfg.vocab_size, h),
        "lm_head.weight": w(cfg.vocab_size, h),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(q_out, h),
            p + "self_attn.k_proj.weight": w(kv_out, h),
            p + "self_attn.v_proj.weight": w(kv_out, h),
            p + "self_attn.o_proj.weight": w(h, q_out),
            p + "mlp.gate_proj.weight": w(cfg.intermediate_size, h),
            p + "mlp.up_proj.weight": w(cfg.intermediate_size, h),
            p + "mlp.down_proj.weight": w(h, cfg.intermediate_size),
            p + "input_layernorm.weight": np.ones(h, np.float32),
            p + "post_attention_layernorm.weight": np.ones(h, np.float32),
        }
    tensors["model.norm.weight"] = np.ones(h, np.float32)
    return tensors


def build_tiny_model(out: Path, cfg: TinyLlama = TinyLlama()) -> Path:
    """Write config, weights and tokenizer to `out` (idempotent: skips if already built)."""
    from safetensors.numpy import save_file

    out = Path(out)
    marker = out / ".inframind-tiny"
    stamp = json.dumps(asdict(cfg), sort_keys=True)
    if marker.exists() and marker.read_text() == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out, cfg.vocab_size)
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": vocab["<s>"],
        "eos_token_id": vocab["</s>"],
        "pad_token_id": vocab["<pad>"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]})
    )
    save_file(build_weights(cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    marker.write_text(stamp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the model into")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build a tiny random-weight Llama that a real vLLM serves on the CPU, with no model hub involved.

Run with the interpreter that has vLLM (``scripts/install-vllm-cpu``)::

    .venv-vllm/bin/python tests/integration/make_tiny_model.py OUT_DIR

OUT_DIR gets ``config.json``, ``model.safetensors``, ``generation_config.json`` and a byte-level BPE
tokenizer (trained here on generated text) with bos/eos/pad tokens and a chat template. The same seed
gives the same files. head_dim is 64 / 2 = 32: vLLM's CPU attention crashes below 32.

transformers and tokenizers live only in ``.venv-vllm``, not in the project's environment, so they are
imported by name (mypy checks this file without them).
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

VOCAB_SIZE = 1000
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
TEXT = (
    "the a an of to in and is it that for on with as was at by be this from or have not are but had they "
    "his her which you were all we one there can been has more will if no out so said what up its about "
    "into than them only other new some could time these two may then do first any my now such like our "
    "over man me even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last "
    "hello hi model token cache node gateway region tenant usage stream embedding vector request reply"
)
WORDS = TEXT.split()


def corpus(rng: random.Random, lines: int = 4000) -> list[str]:
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 16))]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 9999)))
        line = " ".join(words)
        out.append(line.capitalize() + rng.choice(".?!,:;"))
    return out


def build_tokenizer(rng: random.Random) -> Any:
    tk = importlib.import_module("tokenizers")
    transformers = importlib.import_module("transformers")
    byte_level = tk.pre_tokenizers.ByteLevel
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = byte_level(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    tokenizer.post_processor = tk.processors.ByteLevel(trim_offsets=False)
    trainer = tk.trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=byte_level.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(rng), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=2048
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out: Path, seed: int = 0) -> None:
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    rng = random.Random(seed)
    torch.manual_seed(seed)

    tokenizer = build_tokenizer(rng)
    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.seed)
    print(args.out)


if __name__ == "__main__":
    main()

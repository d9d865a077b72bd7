"""A tiny causal language model made on the spot, for a real model server to serve without any download.

A small Llama whose weights are set, not trained: every block's output projections are zero, so the model is a
bigram model (the next token depends only on the current one), and the last prompt token, a marker the chat
template picks from the prompt, leads through one answer token to the end of text. So the model says, for
gpt-researcher's prompt choosing an agent, one JSON agent; for its prompt asking for search queries, a JSON list;
and for anything else the same short report. Prompts go through a byte-level BPE tokenizer trained here
(any text tokenizes, usage counts are real), and each answer is a real forward pass and generation.
"""

from __future__ import annotations

import json
from pathlib import Path

AGENT = json.dumps({"server": "Research Agent", "agent_role_prompt": "You are a careful researcher."})
QUERIES = json.dumps(["prefect work pool routing"])
REPORT = "# Work pools\n\nA work pool routes flow runs to the workers that poll it.\n"
# marker the template ends the prompt with -> the answer it leads to
ANSWERS = {"<|agent|>": AGENT, "<|queries|>": QUERIES, "<|answer|>": REPORT}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}{% set text = messages | map(attribute='content') | join(' ') %}"
    "{% if 'agent_role_prompt' in text %}<|agent|>{% elif 'search queries' in text %}<|queries|>"
    "{% else %}<|answer|>{% endif %}{% endif %}"
)
CORPUS = [
    "A Prefect work pool routes flow runs to the workers that poll it.",
    "vLLM schedules requests with continuous batching to keep the GPU busy.",
    "Qdrant payload indexes make filtered vector search fast.",
]
EOS = "<|endoftext|>"
SPECIAL = [EOS, "<|system|>", "<|user|>", "<|assistant|>", *ANSWERS]


def build_tiny_llm(folder: Path, context_tokens: int = 32768) -> Path:
    """Write the model and tokenizer into ``folder``; returns it (a path ``from_pretrained`` loads).
    ``context_tokens`` is only a position limit: a longer one costs this model nothing."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, pad_token=EOS)
    tokenizer.add_tokens(list(ANSWERS.values()))  # plain tokens: the server's decoding keeps them
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_tokens,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    chain = [(marker, answer) for marker, answer in ANSWERS.items()] + [(answer, EOS) for answer in ANSWERS.values()]
    with torch.no_grad():
        for layer in model.model.layers:  # blocks add nothing to the residual: next token = f(current token)
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for axis, (current, following) in enumerate(chain):
            embedding = torch.zeros(config.hidden_size)
            embedding[axis] = 1.0
            model.model.embed_tokens.weight[tokenizer.convert_tokens_to_ids(current)] = embedding
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(following), axis] = 10.0  # a margin of ~57 logits
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

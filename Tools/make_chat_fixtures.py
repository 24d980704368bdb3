#!/usr/bin/env python3
"""Dev-time: the token ids of chat conversations as the reference implementations build them.
- Llama 2-Chat: Meta's `llama/generation.py` `chat_completion` logic (B_INST/E_INST, B_SYS/E_SYS,
  system folded into the first user turn, each turn BOS ... EOS) with the `sentencepiece` library.
- ChatML: SmolLM2's own Jinja `chat_template` (from its GGUF) rendered with jinja2, tokenized by
  llama.cpp (llama-cpp-python) with special tokens parsed.
- Llama 3: Meta's Llama 3 Instruct Jinja template rendered with jinja2, as text.
Writes Tests/Fixtures/chat_cases.json.

    pip install sentencepiece jinja2 gguf llama-cpp-python
    python3 Tools/make_chat_fixtures.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf [../shared]
"""
import json, os, sys
import sentencepiece as spm

gguf_path = sys.argv[1]
shared = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
dialogs = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Always answer with a haiku."}, {"role": "user", "content": "  I am going to Paris, what should I see?  "}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": " Hello! How can I help? "},
     {"role": "user", "content": "Tell me a joke about 2 + 2."}],
    [{"role": "system", "content": "Be brief.\nUse English."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one, ünïcödé 🦙"}],
]

# Meta's reference (llama/generation.py, Llama 2), transcribed.
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
sp = spm.SentencePieceProcessor(model_file=os.path.join(shared, "data", "tokenizer", "llama2-tokenizer.model"))
def enc(s, bos, eos):
    return ([sp.bos_id()] if bos else []) + sp.encode(s) + ([sp.eos_id()] if eos else [])
def llama2(dialog):
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}] + dialog[2:]
    tokens = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        tokens += enc(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ", True, True)
    tokens += enc(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}", True, False)
    return tokens

import gguf, jinja2
from llama_cpp import Llama
template = gguf.GGUFReader(gguf_path).fields["tokenizer.chat_template"].contents()
llm = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
def chatml(dialog):
    text = jinja2.Environment().from_string(template).render(messages=dialog, add_generation_prompt=True)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

# Llama 3: the chat_template of Meta's Llama-3-8B-Instruct tokenizer_config.json, rendered as text
# (its vocabulary is not available here; the text is what gets tokenized with special tokens).
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
          "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
def llama3(dialog):
    return jinja2.Environment().from_string(LLAMA3).render(messages=dialog, add_generation_prompt=True, bos_token="<|begin_of_text|>")

cases = [{"messages": d, "llama2": llama2(d), "chatml_smollm2": chatml(d), "llama3_text": llama3(d)} for d in dialogs]
out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "chat_cases.json")
json.dump(cases, open(out, "w", encoding="utf-8"), ensure_ascii=False)
print("wrote", out, file=sys.stderr)

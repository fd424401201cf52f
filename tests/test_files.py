"""Publishing outputs: a reader sees the old directory or the new one, never half of either."""

import os

import pytest

from symtune.files import publish_dir, write_atomic


def _tree(path):
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def _written(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_publish_dir_puts_a_new_directory_in_place(tmp_path):
    tmp = _written(tmp_path / ".out.tmp", {"a.txt": "new", "sub/b.txt": "b"})
    assert publish_dir(tmp, tmp_path / "out", durable=True)
    assert _tree(tmp_path / "out") == {"a.txt": "new", "sub/b.txt": "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_dir_replaces_an_existing_one_whole(tmp_path):
    _written(tmp_path / "out", {"a.txt": "old", "only-old.txt": "x"})
    tmp = _written(tmp_path / ".out.tmp", {"a.txt": "new"})
    assert publish_dir(tmp, tmp_path / "out")
    assert _tree(tmp_path / "out") == {"a.txt": "new"}  # nothing of the old one merged in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old- or .tmp left


def test_publish_dir_without_replace_keeps_the_first_writers(tmp_path):
    _written(tmp_path / "out", {"a.txt": "first"})
    tmp = _written(tmp_path / ".out.tmp", {"a.txt": "second"})
    assert not publish_dir(tmp, tmp_path / "out", replace=False)
    assert _tree(tmp_path / "out") == {"a.txt": "first"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    tmp = _written(tmp_path / ".new.tmp", {"a.txt": "only"})
    assert publish_dir(tmp, tmp_path / "new", replace=False)
    assert _tree(tmp_path / "new") == {"a.txt": "only"}


def test_publish_dir_raises_when_the_destination_cannot_be_made(tmp_path):
    tmp = _written(tmp_path / ".out.tmp", {"a.txt": "x"})
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        publish_dir(tmp, tmp_path / "file" / "out", replace=False)
    assert _tree(tmp) == {"a.txt": "x"}  # the caller decides what to do with its temporary directory


def test_publish_dir_keeps_the_old_directory_when_the_new_one_cannot_be_put_in_place(tmp_path):
    _written(tmp_path / "out", {"a.txt": "old"})
    with pytest.raises(OSError):
        publish_dir(tmp_path / "missing.tmp", tmp_path / "out")
    assert _tree(tmp_path / "out") == {"a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "results.json"
    write_atomic(path, "1")
    write_atomic(path, "2")
    assert path.read_text() == "2"
    assert os.listdir(path.parent) == ["results.json"]


def test_write_atomic_takes_bytes_and_figures_are_put_in_place_whole(tmp_path):
    from matplotlib.figure import Figure

    from symtune.report.figures import save_png

    write_atomic(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "figs" / "curve.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert os.listdir(path.parent) == ["curve.png"]


def test_gzip_in_place_is_deterministic_and_readable(tmp_path):
    import gzip

    from symtune.files import gzip_in_place, read_text_maybe_gz

    a, b = tmp_path / "a" / "samples.jsonl", tmp_path / "b" / "samples.jsonl"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text('{"id": 1}\n{"id": 2}\n')
    ga, gb = gzip_in_place(a), gzip_in_place(b)
    assert ga.name == "samples.jsonl.gz" and not a.exists()
    assert ga.read_bytes() == gb.read_bytes()  # no file name or time in the header
    assert gzip.decompress(ga.read_bytes()) == b'{"id": 1}\n{"id": 2}\n'
    assert read_text_maybe_gz(a) == '{"id": 1}\n{"id": 2}\n'

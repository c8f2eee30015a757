"""hf_lnorm._json.write_json: complete files only, nothing left behind on error."""

import json
import os

import pytest

from hf_lnorm._json import write_json


def test_writes_a_parseable_file(tmp_path):
    path = tmp_path / "out.json"
    obj = {"rows": [{"a": 1, "b": [1.5, None, "x"]}], "name": "caf\u00e9"}
    write_json(str(path), obj)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == obj
    assert text.endswith("\n")
    assert os.listdir(tmp_path) == ["out.json"]


def test_indent_is_passed_on(tmp_path):
    path = tmp_path / "one_line.json"
    write_json(str(path), {"a": [1, 2]}, indent=None)
    assert path.read_text(encoding="utf-8") == '{"a": [1, 2]}\n'


def test_unserializable_object_leaves_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    write_json(str(path), {"ok": True})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(str(path), {"ok": False, "bad": object()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.json"]


def test_unserializable_object_creates_no_file(tmp_path):
    with pytest.raises(TypeError):
        write_json(str(tmp_path / "new.json"), [object()])
    assert os.listdir(tmp_path) == []


def test_missing_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    write_json(str(path), [1, 2, 3])
    assert json.loads(path.read_text(encoding="utf-8")) == [1, 2, 3]
    assert os.listdir(path.parent) == ["out.json"]


def test_non_ascii_text_is_written_as_utf8(tmp_path):
    path = tmp_path / "t.json"
    write_json(str(path), {"prediction": "Y murió Elimelech"})
    assert "murió" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == {"prediction": "Y murió Elimelech"}


def test_staged_file_renames_on_success_and_removes_on_error(tmp_path):
    from hf_lnorm._json import staged_file

    target = tmp_path / "sub" / "graph.onnx"
    with staged_file(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and not target.exists()
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="interrupted"):
        with staged_file(target, suffix=".png") as tmp:
            assert tmp.endswith(".png")
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"new"  # the previous complete file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["graph.onnx"]  # no temporary file left


def test_file_is_flushed_before_the_rename_and_gets_the_umask_mode(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    old_mask = os.umask(0o002)
    try:
        write_json(str(tmp_path / "out.json"), {"a": 1})
    finally:
        os.umask(old_mask)
    assert events == ["fsync", "replace", "fsync"]  # the file, the rename, then the folder entry
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o664  # 0o666 & ~umask, not mkstemp's 0o600

"""Publishing to `--out` never replaces what pit did not write.

`pit data synth` and `pit data wiki` swap a whole folder into place; these
tests put a user's file where they publish and check it survives, and that
the current directory, home and an empty `--out` are refused outright.
"""

from __future__ import annotations

import json

import pytest
from real_data import ENWIKI_FILMS
from typer.testing import CliRunner

from pit.cli import app
from pit.errors import UnsafeOutputError
from pit.storage import Store
from pit.storage.destination import check_destination, destination_problem

runner = CliRunner()
DUMP = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"
SYNTH = ["data", "synth", "--preset", "smoke", "--set", "world.n_old=4",
         "--set", "world.n_train=4", "--set", "world.n_test=2", "--set", "world.n_cross=2"]


def wiki_args(out: str) -> list[str]:
    return ["data", "wiki", "--dump", str(DUMP), "--index", str(INDEX),
            "--category", r"^\d{4} films$", "--workers", "1", "--out", out]


def flat(text: str) -> str:
    return " ".join(text.split())


def users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("a week of notes")
    return folder


@pytest.mark.parametrize("command", ["synth", "wiki"])
def test_out_on_a_folder_holding_a_users_file_is_refused_and_the_file_kept(tmp_path, command):
    folder = users_folder(tmp_path)
    args = SYNTH + ["--out", str(folder)] if command == "synth" else wiki_args(str(folder))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = flat(result.output)
    assert str(folder) in message and "notes.txt" in message and "--overwrite" in message
    assert "no MANIFEST.json" in message
    assert (folder / "notes.txt").read_text() == "a week of notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging left behind


def test_overwrite_replaces_a_users_folder_when_asked(tmp_path):
    folder = users_folder(tmp_path)
    result = runner.invoke(app, SYNTH + ["--out", str(folder), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (folder / "notes.txt").exists() and (folder / "MANIFEST.json").exists()


def test_an_output_pit_published_is_replaced_but_not_once_a_user_added_a_file(tmp_path):
    out = tmp_path / "films"
    for _ in range(2):
        result = runner.invoke(app, wiki_args(str(out)))
        assert result.exit_code == 0, result.output
    (out / "my-analysis.ipynb").write_text("{}")
    result = runner.invoke(app, wiki_args(str(out)))
    assert result.exit_code == 2
    assert "MANIFEST.json does not list (my-analysis.ipynb)" in flat(result.output)
    assert (out / "my-analysis.ipynb").exists()
    assert json.loads((out / "card.json").read_text())["counts"]["docs"] == 31


def test_an_empty_or_missing_folder_is_published_to(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("empty", "new/deeper"):
        assert destination_problem(str(tmp_path / name), overwrite=False) is None


def test_a_file_at_out_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UnsafeOutputError, match=r"data.csv is a file, not a folder.*--overwrite"):
        check_destination(str(tmp_path / "data.csv"), overwrite=False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_current_and_home_directories_are_refused_even_with_overwrite(
    tmp_path, monkeypatch, overwrite
):
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    (work / "thesis.tex").write_text("chapter 1")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    flags = ["--overwrite"] if overwrite else []
    for out, why in ((".", "is the current directory"), (str(work), "is the current directory"),
                     ("~", "is your home directory"), ("..", "is your home directory"),
                     ("/", "a folder above the current directory"),
                     ("", "--out is empty")):
        result = runner.invoke(app, SYNTH + ["--out", out, *flags])
        assert result.exit_code == 2, (out, result.output)
        assert why in flat(result.output), (out, result.output)
        assert (work / "thesis.tex").read_text() == "chapter 1"
    result = runner.invoke(app, wiki_args("") + flags)
    assert result.exit_code == 2 and "--out is empty" in flat(result.output)
    assert sorted(p.name for p in work.iterdir()) == ["thesis.tex"]


def test_an_s3_prefix_holding_foreign_objects_is_refused(s3_bucket, tmp_path):
    Store(s3_bucket).write_bytes("shared/readme.txt", b"team notes")
    problem = destination_problem(f"{s3_bucket}/shared", overwrite=False)
    assert problem and "readme.txt" in problem and "--overwrite" in problem
    assert "bucket root" in destination_problem(s3_bucket, overwrite=True)
    src = tmp_path / "ds"
    src.mkdir()
    (src / "docs.jsonl").write_text("{}\n")
    Store(s3_bucket).publish(src, "published")
    assert destination_problem(f"{s3_bucket}/published", overwrite=False) is None

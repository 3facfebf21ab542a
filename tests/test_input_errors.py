"""Small bad-input cases of issue 21: each is one clear line naming the file (and line), exit code 2."""

from __future__ import annotations

from distilrank.cli import main


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_rank_documents_given_a_folder_says_it_is_a_folder(tiny_model, tmp_path, capsys):
    assert main(["rank", f"model={tiny_model}", "query=sort a list", f"documents={tmp_path}"]) == 2
    err = _error(capsys)
    assert f"{tmp_path}: is a folder, not a file" in err and "no such file" not in err


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("data: demo\ntop_k: [1, 2\nmodel: x\n")
    assert main(["eval", "--config", str(config)]) == 2
    err = _error(capsys)
    assert f"{config}:3:6: not valid YAML: expected ',' or ']'" in err

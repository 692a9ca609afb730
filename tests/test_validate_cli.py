"""``wishbot validate`` and ``wishbot schema`` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from bot.cli import main
from bot.commands.validate import validate_file

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "wishlist.yaml"
GOOD = """version: 1
user: bot
cvmfs_repo: unpacked.example.org
output_format: 'x.io/sync/$(image)'
input:
  - quay.io/a/b:1
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return str(path)


def test_valid_file_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "w.yaml", GOOD)
    assert main(["validate", path]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "1 valid file" in out.err


def test_warnings_still_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "w.yaml", GOOD + "  - quay.io/a/b:1\n")
    assert main(["validate", path]) == 0
    assert capsys.readouterr().out == f"{path}:7:5: warning: 'quay.io/a/b:1' is listed twice: " + (
        "on line 6 and on line 7; the later entry is ignored — remove one of them\n"
    )


def test_any_invalid_file_exits_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", GOOD.replace("output_format", "ouput_format"))
    assert main(["validate", good, bad]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{bad}:4:1: error: unknown key 'ouput_format' — did you mean 'output_format'?" in lines
    assert f"{bad}:1:1: error: missing key 'output_format'" in "\n".join(lines)
    assert not any(line.startswith(good) for line in lines)


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", missing, str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{missing}: error: no such file — check the path of the wishlist",
        f"{tmp_path}: error: is a directory, not a wishlist file",
    ]


def test_bad_flags_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--format", "xml", "w.yaml"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    assert "FILE" in capsys.readouterr().err


def test_json_format_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", GOOD + "  - quay.io/A/b\n  - http://quay.io/c/d:1\n")
    assert main(["validate", "--format", "json", bad]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert isinstance(payload, list) and len(payload) == 2
    keys = {"path", "line", "column", "severity", "code", "message", "hint", "image"}
    assert all(set(item) == keys for item in payload)
    error, warning = payload
    assert (error["line"], error["column"], error["severity"], error["code"]) == (
        7,
        5,
        "error",
        "bad-reference",
    )
    assert error["image"] == "quay.io/A/b" and error["path"] == bad
    assert (warning["line"], warning["severity"], warning["code"]) == (8, "warning", "insecure")


def test_json_format_of_valid_file_is_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--format", "json", write(tmp_path, "w.yaml", GOOD)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_example_wishlist_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == ""
    wishlist, problems = validate_file(str(EXAMPLE))
    assert wishlist is not None and problems == []
    assert any(w.reference.is_wildcard for w in wishlist.wishes)
    assert any(len(w.platforms) == 2 for w in wishlist.wishes)
    assert EXAMPLE.read_text().startswith("# yaml-language-server: $schema=")


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", GOOD + "# " + "x" * (1024 * 1024) + "\n")
    wishlist, problems = validate_file(path)
    assert wishlist is None
    assert [p.code for p in problems] == ["too-large"]
    assert "at most 1 MiB" in problems[0].message


def test_billion_laughs_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    path = write(tmp_path, "lol.yaml", GOOD + "\n".join(lines) + "\n")
    started = time.monotonic()
    assert main(["validate", path]) == 1
    assert time.monotonic() - started < 2
    out = capsys.readouterr().out
    assert "billion laughs" in out
    assert "anchors and aliases" in out


def test_schema_command_prints_a_valid_2020_12_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(
        {
            "version": 1,
            "user": "u",
            "cvmfs_repo": "r.org",
            "output_format": "$(image)",
            "input": ["a"],
        }
    )
    assert not validator.is_valid({"version": 1})
    # the shipped file and the printed schema are the same
    shipped = Path(__file__).resolve().parent.parent / "schemas" / "wishlist.schema.json"
    assert json.loads(shipped.read_text()) == schema


def test_no_traceback_from_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, "evil.yaml", b"\xff\xfe" + b"\x00garbage: [" * 50)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "validate", path, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert json.loads(done.stdout)[0]["code"] == "encoding"

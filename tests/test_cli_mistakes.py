"""Mistakes that used to pass in silence: each is said plainly, with its exit code.

Every case runs the real command (``main``, in this process for speed; in a
process of its own where logging or the user matter) and checks the message,
the exit status and that no exception escapes: a publisher path with a typo, an unmounted repository, a catalog of
a missing tree, a wishlist for another repository, a setting out of range or
mistyped, an unwritable tree, "error:" said twice, reST markup in ``--help``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

REPO = "unpacked.example.org"
OTHER = "other.example.org"
SETPRIV = shutil.which("setpriv")
NOBODY = 65534
PYTHON = (sys.executable, "-m", "bot")
Done = subprocess.CompletedProcess[str]


def wishbot_process(*args: str, env: dict[str, str] | None = None) -> Done:
    """The command in a process of its own, as people and CI run it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WISHBOT_")}
    done = subprocess.run(
        [*PYTHON, *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


Wishbot = Callable[..., Done]


@pytest.fixture
def wishbot(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Wishbot:
    """The command run in this process (faster); an escaping exception fails the test."""

    def run(*args: str, env: dict[str, str] | None = None) -> Done:
        for name in [name for name in os.environ if name.startswith("WISHBOT_")]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def recipe(path: Path, repo: str = REPO, *inputs: str) -> str:
    body = "".join(f"\n  - '{text}'" for text in inputs) or " []"
    path.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{repo}'\n"
        f"output_format: 'thin.example.org/$(image)'\ninput:{body}\n"
    )
    return str(path)


def recorded_tree(path: Path, repo: str) -> Path:
    """A publisher tree as apply leaves it, reduced to its repository record."""
    (path / ".metadata").mkdir(parents=True)
    (path / ".metadata/repository.json").write_text(json.dumps({"version": 1, "cvmfs_repo": repo}))
    return path


# --- a publisher that is not there ---------------------------------------------


def test_plan_against_a_mistyped_publisher_is_an_error(wishbot: Wishbot, tmp_path: Path) -> None:
    wishlist = recipe(tmp_path / "w.yaml", REPO, "registry.example.org/x:1")
    typo = tmp_path / "typo"
    done = wishbot("plan", wishlist, "--publisher", f"local:{typo}")
    assert done.returncode == 2
    assert f"the publisher tree {typo} does not exist" in done.stderr
    assert "leave out --publisher" in done.stderr
    assert "to add" not in done.stdout and not typo.exists()
    done = wishbot("plan", wishlist, "--publisher", str(typo))  # a mount path with a typo
    assert done.returncode == 2 and f"{typo} is not a directory" in done.stderr


def test_plan_against_an_unmounted_repository_is_an_error(wishbot: Wishbot, tmp_path: Path) -> None:
    wishlist = recipe(tmp_path / "w.yaml", REPO, "registry.example.org/x:1")
    (tmp_path / "cvmfs").mkdir()
    env = {"WISHBOT_CVMFS_ROOT": str(tmp_path / "cvmfs")}
    done = wishbot("plan", wishlist, "--publisher", f"cvmfs:{REPO}", env=env)
    assert done.returncode == 1
    assert f"the CernVM-FS repository {REPO} is not mounted" in done.stderr
    assert f"'cvmfs_server mount {REPO}'" in done.stderr and "to add" not in done.stdout


def test_an_existing_empty_directory_is_an_empty_publisher(
    wishbot: Wishbot, tmp_path: Path
) -> None:
    (tmp_path / "tree").mkdir()
    done = wishbot("plan", recipe(tmp_path / "w.yaml"), "--publisher", f"local:{tmp_path / 'tree'}")
    assert done.returncode == 0, done.stderr
    assert "No changes" in done.stdout or "no changes" in done.stdout.lower()


def test_catalog_of_a_missing_tree_writes_nothing(wishbot: Wishbot, tmp_path: Path) -> None:
    out = tmp_path / "catalog"
    typo = tmp_path / "typo"
    done = wishbot(
        "catalog", "--publisher", f"local:{typo}", "--cvmfs-repo", REPO, "--output", str(out)
    )
    assert done.returncode == 2
    assert f"the publisher tree {typo} does not exist" in done.stderr
    assert "wishbot apply creates the tree" in done.stderr
    assert not out.exists() and not typo.exists()
    (tmp_path / "cvmfs").mkdir()
    env = {"WISHBOT_CVMFS_ROOT": str(tmp_path / "cvmfs")}
    done = wishbot("catalog", "--publisher", f"cvmfs:{REPO}", "--output", str(out), env=env)
    assert done.returncode == 1 and "is not mounted" in done.stderr and not out.exists()


def test_gc_of_a_mistyped_publisher_creates_nothing(wishbot: Wishbot, tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    for extra in ((), ("--dry-run",)):
        done = wishbot("gc", "--publisher", f"local:{typo}", *extra)
        assert done.returncode == 2
        assert f"the publisher tree {typo} does not exist" in done.stderr
        assert not typo.exists()


# --- the repository name -------------------------------------------------------


def test_apply_records_the_repository_and_catalog_needs_no_option(
    wishbot: Wishbot, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "1", [build_layer(with_parents([file("etc/a", "a")]))])
    tree = tmp_path / "tree"
    wishlist = recipe(tmp_path / "w.yaml", REPO, f"{registry.host}/{unique_repo}:1")
    env = {"WISHBOT_INSECURE_REGISTRIES": registry.host}
    done = wishbot("apply", wishlist, "--publisher", f"local:{tree}", "--no-thin", env=env)
    assert done.returncode == 0, done.stderr
    assert f"creating the publisher tree {tree}" in done.stderr
    record = json.loads((tree / ".metadata/repository.json").read_text())
    assert record == {"version": 1, "cvmfs_repo": REPO}

    done = wishbot("catalog", "--publisher", f"local:{tree}", "--format", "json")
    assert done.returncode == 0, done.stderr
    catalog = json.loads(done.stdout)
    assert catalog["cvmfs_repo"] == REPO and len(catalog["images"]) == 1
    done = wishbot("catalog", "--publisher", f"local:{tree}", "--cvmfs-repo", OTHER)
    assert done.returncode == 2
    assert f"--cvmfs-repo {OTHER}, but local:{tree} is {REPO}" in done.stderr

    # the wishlist of another repository is refused, before anything is resolved
    other = recipe(tmp_path / "other.yaml", OTHER, f"{registry.host}/{unique_repo}:1")
    done = wishbot("apply", other, "--publisher", f"local:{tree}", env=env)
    assert done.returncode == 2
    assert f"the wishlist is for {OTHER}, but the publisher local:{tree} is {REPO}" in done.stderr


def test_a_wishlist_for_another_repository_does_not_plan_no_changes(
    wishbot: Wishbot, tmp_path: Path
) -> None:
    tree = recorded_tree(tmp_path / "tree", OTHER)
    catalog = tmp_path / "catalog.json"
    done = wishbot("catalog", "--publisher", f"local:{tree}", "--json", str(catalog))
    assert done.returncode == 0, done.stderr
    wishlist = recipe(tmp_path / "w.yaml", REPO)
    done = wishbot("plan", wishlist, "--catalog", str(catalog))
    assert done.returncode == 2 and "No changes" not in done.stdout
    assert f"the wishlist is for {REPO}, but the catalog {catalog} is {OTHER}" in done.stderr
    done = wishbot("plan", wishlist, "--publisher", f"local:{tree}")
    assert done.returncode == 2
    assert f"the wishlist is for {REPO}, but the publisher local:{tree} is {OTHER}" in done.stderr
    done = wishbot("plan", wishlist, "--publisher", str(tree))  # read as a mount
    assert done.returncode == 2 and f"is {OTHER}" in done.stderr


# --- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WISHBOT_TIMEOUT", "0", "a number above 0"),
        ("WISHBOT_TIMEOUT", "-5", "a number above 0"),
        ("WISHBOT_TIMEOUT", "soon", "expected float"),
        ("WISHBOT_WORKERS", "0", "at least 1"),
        ("WISHBOT_GRACE_DAYS", "-1", "at least 0"),
        ("WISHBOT_RETRIES", "1e9", "expected int"),
        ("WISHBOT_FORGE", "gitlub", "gitlab, github or local"),
    ],
)
def test_a_setting_out_of_range_is_a_configuration_error(
    wishbot: Wishbot, tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    (tmp_path / "tree").mkdir()
    done = wishbot("gc", "--publisher", f"local:{tmp_path / 'tree'}", env={variable: value})
    assert done.returncode == 2
    assert done.stderr.startswith("wishbot: error: ") and variable in done.stderr
    assert expected in done.stderr


def test_a_mistyped_variable_is_named_with_the_closest_setting(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    env = {
        "WISHBOT_TIMEOUTS": "5",
        "WISHBOT_REGISTRY_PUSH_PASWORD": "secret-value",
        "WISHBOT_REGISTRY_PUSH_HOST": "r.example.org",  # a credential family: no warning
        "WISHBOT_CVMFS_ROOT": "/cvmfs",  # read by the cvmfs backend: no warning
    }
    # a process of its own: logging is set up once per process
    done = wishbot_process("gc", "--publisher", f"local:{tmp_path / 'tree'}", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "WISHBOT_TIMEOUTS is not a wishbot setting" in done.stderr
    assert "did you mean WISHBOT_TIMEOUT?" in done.stderr
    assert "did you mean WISHBOT_REGISTRY_PUSH_PASSWORD?" in done.stderr
    assert "secret-value" not in done.stderr  # names only, never values
    assert "PUSH_HOST" not in done.stderr and "CVMFS_ROOT" not in done.stderr


def test_every_setting_is_range_checked_in_the_toml_file_too(
    wishbot: Wishbot, tmp_path: Path
) -> None:
    config = tmp_path / "wishbot.toml"
    config.write_text("timeout = 0\n")
    (tmp_path / "tree").mkdir()
    done = wishbot(
        "gc", "--publisher", f"local:{tmp_path / 'tree'}", env={"WISHBOT_CONFIG": str(config)}
    )
    assert done.returncode == 2 and "'timeout'" in done.stderr


# --- an unwritable publisher -------------------------------------------------------


@pytest.fixture
def root_owned() -> Iterator[Path]:
    """A directory only root may write to, that uid 65534 can read and enter."""
    with tempfile.TemporaryDirectory(prefix="wishbot-ro-") as name:
        path = Path(name)
        path.chmod(0o755)
        (path / "tree").mkdir(mode=0o755)
        (path / "tree").chmod(0o755)
        yield path


@pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to run as another user"
)
def test_an_unwritable_publisher_is_named_without_a_traceback(root_owned: Path) -> None:
    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        assert SETPRIV is not None
        done = subprocess.run(
            [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *PYTHON, *args],
            cwd=root_owned,
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(root_owned),
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert "Traceback" not in done.stderr and "PermissionError" not in done.stderr
        return done

    tree = root_owned / "tree"
    done = as_nobody("gc", "--publisher", f"local:{tree}")
    assert done.returncode == 1, done.stderr
    assert f"cannot write to the publisher tree: {tree} is not writable" in done.stderr
    assert "owner" in done.stderr
    wishlist = recipe(root_owned / "w.yaml", REPO, "registry.example.org/x:1")
    (root_owned / "w.yaml").chmod(0o644)
    done = as_nobody("apply", wishlist, "--publisher", f"local:{root_owned / 'new'}")
    assert done.returncode == 1, done.stderr
    assert f"{root_owned} is not writable" in done.stderr


def test_an_os_error_that_escapes_is_printed_plainly() -> None:
    from bot.cli import os_error_text

    error = PermissionError(13, "Permission denied", "/srv/tree/.wishbot")
    text = os_error_text(error)
    assert text.startswith("wishbot: error: cannot use '/srv/tree/.wishbot': Permission denied — ")


# --- how errors and help read --------------------------------------------------------


def test_an_unreadable_wishlist_says_error_once(wishbot: Wishbot, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    missing = tmp_path / "missing.yaml"
    done = wishbot("apply", str(missing), "--publisher", f"local:{tmp_path / 'tree'}")
    assert done.returncode == 1
    assert done.stderr.count("error") == 1, done.stderr
    assert f"{missing}: error: no such file" in done.stderr


def test_error_text_never_says_error_twice() -> None:
    from bot.cli import error_text
    from bot.errors import UsageError

    assert error_text(UsageError("x.yaml: error: no such file")) == (
        "wishbot: error: x.yaml: no such file"
    )
    assert error_text(UsageError("bad", where="x.yaml", hint="fix it")) == (
        "wishbot: error: x.yaml: bad — fix it"
    )


def test_help_is_plain_text() -> None:
    import argparse

    from bot.cli import build_parser

    parser = build_parser()
    helps = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps += [sub.format_help() for sub in action.choices.values()]
    assert len(helps) > 10
    for text in helps:
        assert "``" not in text and ":class:" not in text and ":mod:" not in text, text


def test_apply_to_an_unmounted_repository_is_an_error(wishbot: Wishbot, tmp_path: Path) -> None:
    (tmp_path / "cvmfs").mkdir()
    env = {"WISHBOT_CVMFS_ROOT": str(tmp_path / "cvmfs")}
    wishlist = recipe(tmp_path / "w.yaml", REPO, "registry.example.org/x:1")
    done = wishbot("apply", wishlist, "--publisher", f"cvmfs:{REPO}", env=env)
    assert done.returncode == 1
    assert f"the CernVM-FS repository {REPO} is not mounted" in done.stderr
    assert not (tmp_path / "cvmfs" / REPO).exists()


def test_a_directory_without_the_layout_is_read_with_a_warning(
    wishbot: Wishbot, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("not a publisher")
    done = wishbot("plan", recipe(tmp_path / "w.yaml"), "--publisher", f"local:{home}")
    assert done.returncode == 0, done.stderr
    assert f"wishbot: warning: {home} holds no published images" in done.stderr
    (tmp_path / "empty").mkdir()
    done = wishbot(
        "plan", recipe(tmp_path / "w.yaml"), "--publisher", f"local:{tmp_path / 'empty'}"
    )
    assert done.returncode == 0 and "warning" not in done.stderr

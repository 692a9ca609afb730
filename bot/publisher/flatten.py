"""Flat images: apply an unpacked ``layerfs`` onto a root, add Apptainer metadata.

:func:`apply_layerfs` is the sibling of :func:`bot.publisher.unpack.apply_layer`
for a layer that is already unpacked in the publisher (the blob is not
downloaded again). It reads the layer's sidecar (see ``unpack``'s module
documentation) and uses the same :class:`~bot.publisher.unpack.SafeTree`
operations, so both paths obey the same rules:

1. hardlinks to lower-layer files recorded in the sidecar are made first
   (in the tar they pointed at what lower layers left);
2. the layerfs is walked top-down; in each directory the whiteout markers
   are handled before the other entries (a whiteout or an opaque marker
   only hides *lower* layers, whatever the entry order in the tar was);
3. directories the tar never listed (``implicit_dirs``) are only resolved
   (following a lower layer's symlink, e.g. ``lib -> usr/lib``), never
   created over what is there; files sharing an inode in the layerfs become
   hardlinks in the flat image.

Without root, a layerfs keeps the image's modes too (a directory ``0000``,
a file ``0000``): its directories are opened (``u+rx``) for the walk when
their mode denies it, and its files for the moment they are opened (:class:`~bot.publisher.safetree.OwnerAccess`),
and their modes are put back before :func:`apply_layerfs` returns, also when
it fails.

:func:`write_singularity_metadata` writes ``.singularity.d`` the way
Apptainer's OCI conversion (docker2singularity) lays it out.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from bot.core.model import ImageConfig
from bot.errors import PublisherError
from bot.publisher import xattrs
from bot.publisher.diskerrors import disk_error
from bot.publisher.layerstream import CHUNK
from bot.publisher.safetree import WHITEOUT, Meta, OwnerAccess, SafeTree, dispatch_marker
from bot.publisher.unpack import LayerStats, sidecar_path

_DEVICE_KINDS = {stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}


def _read_sidecar(path: Path, context: str) -> tuple[str, set[str], list[tuple[str, str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PublisherError(
            f"{context}: the layer has no sidecar {path}",
            hint="unpack the layer again (wishbot writes the sidecar with the layerfs)",
        ) from None
    except (OSError, ValueError) as exc:
        raise PublisherError(f"{context}: cannot read the layer sidecar {path}: {exc}") from None
    try:
        diff_id = str(data["diff_id"])
        implicit = {str(p) for p in data["implicit_dirs"]}
        links = [(str(item["path"]), str(item["target"])) for item in data["links"]]
    except (KeyError, TypeError) as exc:
        raise PublisherError(
            f"{context}: the layer sidecar {path} is malformed ({exc})",
            hint="unpack the layer again",
        ) from None
    return diff_id, implicit, links


def _copier(source: str, access: OwnerAccess) -> Callable[[int], int]:
    def copy(out: int) -> int:
        src = access.open_file(source)
        try:
            total = 0
            try:
                while True:
                    n = os.copy_file_range(src, out, CHUNK * 16)
                    if n == 0:
                        return total
                    total += n
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
            while True:  # fallback: plain read/write from where we are
                chunk = os.read(src, CHUNK)
                if not chunk:
                    return total
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                total += len(chunk)
        finally:
            os.close(src)

    return copy


def readable_as_is(layerfs: Path) -> bool:
    """Can :func:`apply_layerfs` read ``layerfs`` without changing a single mode?

    Always as root. Otherwise every directory must be listable and searchable
    and every regular file readable by us, as the modes stand (an image's
    ``0000`` directory or ``etc/shadow`` is not).
    """
    if os.geteuid() == 0:
        return True
    pending = [os.fspath(layerfs)]
    while pending:
        path = pending.pop()
        if not os.access(path, os.R_OK | os.X_OK):
            return False
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and not os.access(entry.path, os.R_OK):
                    return False
    return True


def apply_layerfs(
    root: Path,
    layerfs: Path,
    *,
    context: str,
    sidecar: Path | None = None,
    privileged: bool | None = None,
) -> LayerStats:
    """Apply an unpacked layer (``layerfs`` + sidecar) onto the flat root ``root``."""
    diff_id, implicit, links = _read_sidecar(sidecar or sidecar_path(layerfs), context)
    root.mkdir(parents=True, exist_ok=True)
    tree = SafeTree(root, context=context, flat=True, privileged=privileged)
    source = OwnerAccess()
    try:
        try:
            entries = _apply_tree(tree, os.path.abspath(layerfs), implicit, links, source)
        finally:
            source.restore()  # the layerfs keeps exactly its modes, whatever happened
    except OSError as exc:
        raise disk_error(exc, f"{context}: cannot apply the unpacked layer") from None
    tree.finish()
    return LayerStats(
        diff_id=diff_id,
        unpacked_size=0,  # not known without the tar stream: see the layer's layers.json
        entries=entries,
        file_bytes=tree.file_bytes,
        skipped=tuple(item["path"] for item in tree.record.skipped),
        dropped_xattrs=tree.dropped_xattrs(),
    )


def _apply_tree(
    tree: SafeTree,
    base: str,
    implicit: set[str],
    links: list[tuple[str, str]],
    source: OwnerAccess,
) -> int:
    """Steps 1-3 of the module documentation; returns the number of entries.

    ``source`` opens the layerfs's own directories and files for reading.
    """
    entries = 0
    for path, target in links:
        tree.hardlink(path, target)
        entries += 1
    inodes: dict[tuple[int, int], str] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        names = sorted(os.listdir(f"{base}/{rel}" if rel else base))
        entries += _apply_markers(tree, rel, names)
        subdirs: list[str] = []
        for name in names:
            if name.startswith(WHITEOUT):
                continue
            child = f"{rel}/{name}" if rel else name
            entries += 1
            if _apply_entry(tree, child, f"{base}/{child}", implicit, inodes, source):
                subdirs.append(child)
        pending.extend(reversed(subdirs))
    return entries


def _apply_markers(tree: SafeTree, rel: str, names: list[str]) -> int:
    """Handle the whiteout markers among ``names`` of directory ``rel``; returns their number."""
    markers = [n for n in names if n.startswith(WHITEOUT)]
    for name in markers:
        dispatch_marker(tree, f"{rel}/{name}" if rel else name)
    return len(markers)


def _apply_entry(
    tree: SafeTree,
    child: str,
    source_path: str,
    implicit: set[str],
    inodes: dict[tuple[int, int], str],
    source: OwnerAccess,
) -> bool:
    """Apply one (non-marker) entry of the layerfs; True for a directory to descend into."""
    st = os.lstat(source_path)
    meta = Meta(
        mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
    )
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        if child in implicit:
            tree.resolve_dir(child, create=True, entry=child)
        else:
            tree.directory(child, meta, xattrs.from_file(source_path))
        source.open_dir(source_path, st.st_mode, stat.S_IRUSR | stat.S_IXUSR)
        return True
    if kind == stat.S_IFREG:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            tree.hardlink(child, inodes[key])
            return False
        if st.st_nlink > 1:
            inodes[key] = child
        copy = _copier(source_path, source)
        tree.regular(child, meta, copy, xattrs.from_file(source_path))
    elif kind == stat.S_IFLNK:
        tree.symlink(child, os.readlink(source_path), meta)
    elif kind in _DEVICE_KINDS:
        tree.device(child, _DEVICE_KINDS[kind], meta, os.major(st.st_rdev), os.minor(st.st_rdev))
    return False


# --- .singularity.d -----------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "var/tmp", "home", "root", "etc")
STICKY_DIRS = ("tmp", "var/tmp")

_SOURCE_ENV = """for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""

ACTIONS = {
    "exec": f"""#!/bin/sh
{_SOURCE_ENV}
exec "$@"
""",
    "run": f"""#!/bin/sh
{_SOURCE_ENV}
if test -x /.singularity.d/runscript; then
    exec /.singularity.d/runscript "$@"
fi
echo "No runscript found in the container." >&2
exit 1
""",
    "shell": f"""#!/bin/sh
{_SOURCE_ENV}
if test -n "${{SINGULARITY_SHELL:-}}" && test -x "$SINGULARITY_SHELL"; then
    exec "$SINGULARITY_SHELL" "$@"
elif test -x /bin/bash; then
    SHELL=/bin/bash
    export SHELL
    exec /bin/bash --norc "$@"
elif test -x /bin/sh; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "No shell found in the container." >&2
exit 1
""",
    "start": f"""#!/bin/sh
{_SOURCE_ENV}
if test -x /.singularity.d/startscript; then
    exec /.singularity.d/startscript "$@"
fi
""",
    "test": f"""#!/bin/sh
{_SOURCE_ENV}
if test -x /.singularity.d/test; then
    exec /.singularity.d/test "$@"
fi
echo "No test found in the container." >&2
exit 1
""",
}

ENV_BASE = "#!/bin/sh\n"
ENV_99_BASE = """#!/bin/sh
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH=/.singularity.d/libs
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
PS1="Apptainer> "
export LD_LIBRARY_PATH PS1
"""


def shell_quote(word: str) -> str:
    """Single-quote ``word`` for POSIX sh (safe for any content)."""
    return "'" + word.replace("'", "'\\''") + "'"


def environment_script(env: tuple[str, ...]) -> str:
    """``env/10-docker2singularity.sh`` from the config's ``Env``.

    ``PATH`` is set; other variables get the image's value unless already set
    and non-empty (docker2singularity's ``${VAR:-value}``). Names that are not
    shell identifiers are dropped (they could not be exported anyway and
    must not be spliced into a script).
    """
    lines = ["#!/bin/sh"]
    for item in env:
        name, sep, value = item.partition("=")
        if not _ENV_NAME.match(name):
            continue
        if not sep:
            lines.append(f'export {name}="${{{name}:-}}"')
        elif name == "PATH":
            lines.append(f"export PATH={shell_quote(value)}")
        else:
            lines.append(f'if [ -z "${{{name}:-}}" ]; then {name}={shell_quote(value)}; fi')
            lines.append(f"export {name}")
    return "\n".join(lines) + "\n"


def runscript(entrypoint: tuple[str, ...], cmd: tuple[str, ...]) -> str:
    """The runscript: ENTRYPOINT followed by the arguments, or by CMD when none.

    Arguments are passed exactly (no shell re-evaluation), the behaviour
    Apptainer has with ``--no-eval``; with neither ENTRYPOINT nor CMD the
    default is ``/bin/sh``. ``OCI_ENTRYPOINT``/``OCI_CMD`` are kept for
    ``inspect``-style tools.
    """
    ep = " ".join(shell_quote(w) for w in entrypoint)
    cm = " ".join(shell_quote(w) for w in cmd)
    lines = [
        "#!/bin/sh",
        f"OCI_ENTRYPOINT={shell_quote(ep)}",
        f"OCI_CMD={shell_quote(cm)}",
        "",
        "# arguments replace CMD; ENTRYPOINT always comes first",
    ]
    default = cm if (cmd or entrypoint) else "/bin/sh"
    if default:
        lines += ["if [ $# -eq 0 ]; then", f"    set -- {default}", "fi"]
    if entrypoint:
        lines.append(f'set -- {ep} "$@"')
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def write_singularity_metadata(
    root: Path, config: ImageConfig, *, mtime_ns: int = 0, privileged: bool | None = None
) -> None:
    """Write ``.singularity.d`` and the empty mount points into the flat image ``root``.

    Paths are resolved inside ``root`` (an image's own symlinks such as
    ``var -> /private/var`` are followed within it, never out of it).
    Existing mount points, ``etc/hosts`` and ``etc/resolv.conf`` are kept.
    """
    root.mkdir(parents=True, exist_ok=True)
    tree = SafeTree(root, context=f"flat image {root.name}", flat=True, privileged=privileged)
    flat = _FlatImage(tree, mtime_ns)
    _keep_or_make_mount_points(flat)
    _write_singularity_dir(flat, config)
    _keep_or_link_legacy_names(flat)
    tree.finish()


class _FlatImage:
    """Root-owned entries written into a flat image through its :class:`SafeTree`."""

    def __init__(self, tree: SafeTree, mtime_ns: int) -> None:
        self.tree = tree
        self.mtime_ns = mtime_ns

    def meta(self, mode: int) -> Meta:
        return Meta(mode=mode, uid=0, gid=0, mtime_ns=self.mtime_ns)

    def directory(self, name: str, mode: int) -> None:
        self.tree.directory(name, self.meta(mode))

    def write(self, name: str, text: str, mode: int) -> None:
        data = text.encode("utf-8")

        def copy(fd: int) -> int:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return len(data)

        self.tree.regular(name, self.meta(mode), copy)

    def missing(self, name: str) -> bool:
        parent, _, base = name.rpartition("/")
        real = self.tree.resolve_dir(parent, create=True, entry=name)
        assert real is not None
        return not os.path.lexists(self.tree.abs(f"{real}/{base}" if real else base))


def _keep_or_make_mount_points(flat: _FlatImage) -> None:
    """Empty mount points, ``etc/hosts`` and ``etc/resolv.conf`` where the image has none."""
    for name in MOUNT_POINTS:
        if flat.missing(name):
            flat.directory(name, 0o1777 if name in STICKY_DIRS else 0o755)
    for name in ("etc/hosts", "etc/resolv.conf"):
        if flat.missing(name):
            flat.write(name, "", 0o644)


def _write_singularity_dir(flat: _FlatImage, config: ImageConfig) -> None:
    """``.singularity.d``: actions, environment, runscript and labels of ``config``."""
    for name in (".singularity.d", ".singularity.d/actions", ".singularity.d/env"):
        flat.directory(name, 0o755)
    flat.directory(".singularity.d/libs", 0o755)
    for action, text in ACTIONS.items():
        flat.write(f".singularity.d/actions/{action}", text, 0o755)
    flat.write(".singularity.d/env/10-docker2singularity.sh", environment_script(config.env), 0o755)
    flat.write(".singularity.d/runscript", runscript(config.entrypoint, config.cmd), 0o755)
    # an image built by Apptainer carries its own: keep those
    for name, text in (
        (".singularity.d/env/01-base.sh", ENV_BASE),
        (".singularity.d/env/90-environment.sh", ENV_BASE),
        (".singularity.d/env/99-base.sh", ENV_99_BASE),
        (".singularity.d/startscript", ENV_BASE),
    ):
        if flat.missing(name):
            flat.write(name, text, 0o755)
    labels = json.dumps(dict(config.labels), indent=4, sort_keys=True, ensure_ascii=False)
    flat.write(".singularity.d/labels.json", labels + "\n", 0o644)


def _keep_or_link_legacy_names(flat: _FlatImage) -> None:
    """Singularity 2's ``/singularity`` and ``/environment``, unless the image has them."""
    for name, target in (
        ("singularity", ".singularity.d/runscript"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ):
        if flat.missing(name):
            flat.tree.symlink(name, target, flat.meta(0o777))

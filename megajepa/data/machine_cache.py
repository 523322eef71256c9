"""The machine's cache of what a run can rebuild but need not: tokenizers trained on a corpus and the
embedded synthetic corpus, each under a key made from everything it is built from, so an entry is
either exactly what a rebuild would give or never found.

MEGAJEPA_CACHE names the folder (default $XDG_CACHE_HOME/megajepa, else ~/.cache/megajepa);
MEGAJEPA_CACHE=off turns it off. The cache is best effort: a folder that cannot be written costs a
rebuild and a warning, never a failed run."""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "MEGAJEPA_CACHE"


def cache_root() -> Path | None:
    value = os.environ.get(ENV)
    if value == "off":
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "megajepa"


def entry_path(kind: str, name: str) -> Path | None:
    """Where entry `name` of `kind` (e.g. "tokenizers", "<fingerprint>.model") lives; None when off."""
    root = cache_root()
    return None if root is None else root / kind / name


def read(kind: str, name: str) -> bytes | None:
    path = entry_path(kind, name)
    try:
        return None if path is None else path.read_bytes()
    except OSError:  # absent, or a cache folder that is not one: rebuild
        return None


def write(kind: str, name: str, data: bytes) -> None:
    path = entry_path(kind, name)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, data)
    except OSError as e:
        log.warning("could not write %s to the cache (%s=%s turns it off): %s", path, ENV, "off", e)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """A unique temp name in the same folder, fsync, then rename: a crash or a concurrent writer never
    leaves a partial file. Mode 0666, so the umask decides who may read it (mkstemp's 0600 would hide a
    run's files on a shared filesystem)."""
    tmp = str(path.parent / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

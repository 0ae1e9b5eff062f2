"""Files that readers never see half-written: written beside the target, fsynced, then renamed over it."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` only if the block completes; concurrent writers each rename a whole file.
    A write that fails (a full disk) leaves `path` as it was and raises an OSError naming it and the cause."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would keep other readers of a shared directory out
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:   # the OS's reason, with our file's name, not the temp's
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)

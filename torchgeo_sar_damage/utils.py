# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Small helpers shared by the commands that write outputs."""

import os
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Write a file through a temporary file beside it, renamed into place.

    A failure (a full disk, an interruption) leaves the previous file, if any, and no
    temporary file.

    Args:
        path: the output file.
        write: writes the content to the path it is given (the temporary file, which
            keeps the output's suffix so that writers choosing a format by suffix
            work).

    Raises:
        OutputError: if writing or renaming fails with an OSError.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp{path.suffix}')
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f'cannot be written ({err.strerror or err})') from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

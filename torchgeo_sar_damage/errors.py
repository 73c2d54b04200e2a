# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Errors raised by torchgeo-sar-damage.

Every error message names the file or argument at fault, says what is wrong and, where
possible, what to do about it.
"""

import os


class SARDamageError(Exception):
    """Base class of every error this package raises on purpose."""


class ArgumentError(SARDamageError, ValueError):
    """An argument has an invalid value (the command line exits with code 2)."""


class InputFileError(SARDamageError, ValueError):
    """An input file is missing, unreadable or not what it claims to be."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        """Initialise a new InputFileError.

        Args:
            path: the file at fault.
            problem: what is wrong with it and what to do.
        """
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


class OutputError(SARDamageError, OSError):
    """An output path cannot be written (exists, not writable, disk full...)."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        """Initialise a new OutputError.

        Args:
            path: the output path at fault.
            problem: what is wrong with it and what to do.
        """
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


class CatalogueError(InputFileError):
    """A town catalogue (``scene.json``) or one of the files it lists is wrong.

    The message names the town and the file at fault.
    """

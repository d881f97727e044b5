"""Reading and writing IDX files (the format of the MNIST family), gzip-compressed or raw."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import FmnistError

UBYTE = 0x08
MAX_BYTES = 1 << 31  # far above Fashion-MNIST's 47 MB; stops a hostile header or gzip bomb early


def read_bytes(path: Path) -> bytes:
    """The decompressed content of `path` (gzip is recognised by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    data = g.read(MAX_BYTES + 1)
            else:
                data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise FmnistError(f"missing data file: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise FmnistError(f"{path} is corrupt or truncated ({e})") from None
    if len(data) > MAX_BYTES:
        raise FmnistError(f"{path} is larger than any Fashion-MNIST file")
    return data


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking magic number, dimensions and size."""
    if len(data) < 4:
        raise FmnistError(f"{name} is too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= 4:
        raise FmnistError(f"{name} has a bad IDX magic number 0x{data[:4].hex()}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FmnistError(f"{name} ends inside its IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise FmnistError(
            f"{name} holds {len(data)} bytes but its header {dims} says {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (used to make test fixtures and caches)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()

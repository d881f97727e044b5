"""Reading and writing IDX files (the format of the MNIST family), gzip-compressed or raw."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fmnist.errors import FmnistError

UBYTE = 0x08
# The largest Fashion-MNIST file (60,000 images of 28×28 and a 16-byte header). A header that
# declares more is refused before anything is read, so memory stays bounded by the real dataset.
MAX_BYTES = 16 + 60_000 * 28 * 28


def declared_size(head: bytes) -> int | None:
    """The total size an IDX header declares (header included), or None if `head` is not one."""
    if len(head) < 4:
        return None
    zero, dtype, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= 4 or len(head) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))


def _read_declared(f: BinaryIO, path: Path) -> bytes:
    """Read the header, then no more than the size it declares plus one byte (to see trailing
    data); content that is not IDX is read up to a few bytes for parse_idx's message."""
    head = f.read(4)
    if len(head) == 4 and head[2] == UBYTE and 1 <= head[3] <= 4:
        head += f.read(4 * head[3])
    size = declared_size(head)
    if size is None:
        return head
    if size > MAX_BYTES:
        raise FmnistError(f"{path} declares {size:,} bytes, more than any Fashion-MNIST file")
    return head + f.read(size - len(head) + 1)


def read_bytes(path: Path) -> bytes:
    """The decompressed content of `path` (gzip is recognised by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return _read_declared(g, path)
            return _read_declared(f, path)
    except FileNotFoundError:
        raise FmnistError(f"missing data file: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise FmnistError(f"{path} is corrupt or truncated ({e})") from None


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
        raise FmnistError(f"{name} holds {len(data)} bytes but its header {dims} says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (used to make test fixtures and caches)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()

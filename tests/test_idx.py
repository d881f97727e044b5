import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist.data.idx import encode_idx, parse_idx, read_idx
from fmnist.errors import FmnistError


def test_round_trip_raw_and_gzip(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (tmp_path / "raw").write_bytes(encode_idx(array))
    (tmp_path / "z.gz").write_bytes(gzip.compress(encode_idx(array)))
    assert np.array_equal(read_idx(tmp_path / "raw"), array)
    assert np.array_equal(read_idx(tmp_path / "z.gz"), array)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00\x0d\x03" + b"\x00" * 12, "magic"),  # float type, not ubyte
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header"),  # ends inside the dimensions
        (encode_idx(np.zeros((3, 4), np.uint8))[:-1], "header"),  # one byte short
        (encode_idx(np.zeros((3, 4), np.uint8)) + b"\x00", "header"),  # one byte too many
        (b"\x00\x00", "too short"),
    ],
)
def test_malformed_idx_is_rejected(data, message):
    with pytest.raises(FmnistError, match=message):
        parse_idx(data)


def test_truncated_gzip_and_missing_file(tmp_path):
    blob = gzip.compress(encode_idx(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FmnistError, match="corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(FmnistError, match="missing"):
        read_idx(tmp_path / "absent")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_an_array_or_our_error(blob):
    try:
        out = parse_idx(blob)
    except FmnistError:
        return
    assert out.dtype == np.uint8 and out.size == len(blob) - 4 - 4 * out.ndim


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_files_give_an_array_or_our_error(draw):
    blob = bytearray(encode_idx(np.ones((2, 3, 3), np.uint8)))
    for _ in range(draw.draw(st.integers(1, 4))):
        pos = draw.draw(st.integers(0, len(blob) - 1))
        blob[pos] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(blob)))
    try:
        out = parse_idx(bytes(blob[:cut]))
    except FmnistError:
        return
    assert isinstance(out, np.ndarray)


def test_a_gzip_bomb_is_read_no_further_than_its_header_declares(tmp_path):
    import tracemalloc
    import zlib

    # A valid header for 10 images, then 200 MB of zeros: a few hundred KB compressed.
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = z.compress(encode_idx(np.zeros((10, 28, 28), np.uint8)))
    chunk = bytes(1 << 20)
    blob += b"".join(z.compress(chunk) for _ in range(200)) + z.flush()
    (tmp_path / "bomb.gz").write_bytes(blob)
    tracemalloc.start()
    try:
        with pytest.raises(FmnistError, match="7857 bytes but its header"):
            read_idx(tmp_path / "bomb.gz")  # the declared 7,856 bytes and one more
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_a_header_declaring_more_than_the_dataset_is_refused_unread(tmp_path):
    header = encode_idx(np.zeros((1, 28, 28), np.uint8))[:4] + (1_000_000).to_bytes(4, "big") + bytes([0, 0, 0, 28]) * 2
    (tmp_path / "big").write_bytes(header + bytes(1000))
    with pytest.raises(FmnistError, match="declares 784,000,016 bytes, more than any Fashion-MNIST file"):
        read_idx(tmp_path / "big")

"""The fast Decimal String parser against Python's own float()."""

from __future__ import annotations

import numpy as np
import pytest

from dvheval.dicom.decimals import parse_decimals


def test_random_plain_decimals_equal_float_exactly():
    rng = np.random.default_rng(7)
    texts = []
    for _ in range(3000):
        digits = int(rng.integers(1, 16))
        whole = "".join(str(d) for d in rng.integers(0, 10, digits))
        point = int(rng.integers(0, digits + 1))
        text = whole[:point] + "." + whole[point:] if rng.random() < 0.8 else whole
        texts.append(("-" if rng.random() < 0.4 else "") + text)
    raws = [("\\".join(texts[i:i + 30])).encode() for i in range(0, len(texts), 30)]
    got = parse_decimals(raws)
    assert got is not None
    flat = np.concatenate(got)
    expected = np.array([float(t) for t in texts])
    assert flat.tobytes() == expected.tobytes()  # bit for bit, signs of zero included


@pytest.mark.parametrize("raw, values", [
    (b"1.5\\-2\\3", [1.5, -2.0, 3.0]),
    (b" 1.5 \\ 2 ", [1.5, 2.0]),  # spaces only pad the values
    (b".5\\5.\\+7", [0.5, 5.0, 7.0]),
    (b"-0", [-0.0]),
    (b"", []),
])
def test_plain_values(raw, values):
    (got,) = parse_decimals([raw])
    assert got.tolist() == values


@pytest.mark.parametrize("raw", [
    b"1e3",                  # exponent: left to the general parser
    b"nan", b"inf",
    b"1.0 2.0\\3.0",         # two numbers in one value
    b"1\\\\2", b"1\\", b"\\1",  # an empty value
    b"-", b".", b"1.2.3", b"+-1", b"1-2",
    b"1234567890123456",     # more than 15 digits
    b"1,5",
])
def test_anything_else_goes_to_the_general_parser(raw):
    assert parse_decimals([raw]) is None


def test_values_of_several_contours_stay_apart():
    got = parse_decimals([b"1\\2\\3", b"", b"4\\5\\6\\7\\8\\9"])
    assert [g.tolist() for g in got] == [[1.0, 2.0, 3.0], [], [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]]


def test_blocks_split_across_chunks(monkeypatch):
    import dvheval.dicom.decimals as dec

    monkeypatch.setattr(dec, "CHUNK_BYTES", 8)
    raws = [b"1.25\\-3", b"10\\20\\30", b"7"]
    assert [g.tolist() for g in dec.parse_decimals(raws)] == [[1.25, -3.0], [10.0, 20.0, 30.0],
                                                              [7.0]]

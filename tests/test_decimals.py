"""The fast Decimal String parser against Python's own float()."""

from __future__ import annotations

import numpy as np
import pytest

from dvheval.dicom.decimals import parse_decimals


def _random_decimals(seed: int, exponents: bool) -> list[str]:
    """3000 decimals of 1 to 15 digits, some signed, most with a point; with
    ``exponents`` most with an exponent too (``e`` or ``E``, signed or not,
    written with 1 to 3 digits)."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(3000):
        digits = int(rng.integers(1, 16))
        whole = "".join(str(d) for d in rng.integers(0, 10, digits))
        point = int(rng.integers(0, digits + 1))
        text = whole[:point] + "." + whole[point:] if rng.random() < 0.8 else whole
        if exponents and rng.random() < 0.7:
            exponent = str(int(rng.integers(0, 8))).zfill(int(rng.integers(1, 4)))
            text += str(rng.choice(["e", "E"])) + str(rng.choice(["", "-", "+"])) + exponent
        texts.append(str(rng.choice(["", "-", "+"])) + text)
    return texts


@pytest.mark.parametrize("exponents", [False, True])
def test_random_decimals_equal_float_exactly(exponents):
    # with exponents: the forms planning systems write (-1.0e-1, 5.4E+01) and
    # any other float() reads within the fast path's limits (15 digits, powers
    # of ten up to 22)
    texts = _random_decimals(7 if not exponents else 11, exponents)
    raws = [("\\".join(texts[i:i + 30])).encode() for i in range(0, len(texts), 30)]
    got = parse_decimals(raws)
    assert all(values is not None for values in got)
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


@pytest.mark.parametrize("raw, values", [
    (b"1e3", [1000.0]),
    (b"-1.0e-1\\5.4E+01", [-0.1, 54.0]),
    (b"5.e2\\.5e1\\+7E-000", [500.0, 5.0, 7.0]),
    (b"-0e5", [-0.0]),
    (b"1e22\\123456789012345e-22", [1e22, 123456789012345e-22]),
    (b"-2\\1e5\\+3.25E-2\\-4e+0", [-2.0, 1e5, 0.0325, -4.0]),
    # the longest plain decimal (22 characters) beside the shortest
    (b"-123456789012345.e-001\\7", [-12345678901234.5, 7.0]),
])
def test_exponents(raw, values):
    (got,) = parse_decimals([raw])
    assert got.tobytes() == np.array(values).tobytes()


@pytest.mark.parametrize("raw", [
    b"nan", b"inf", b"-infinity", b"0x1p3",
    b"1.0 2.0\\3.0",         # two numbers in one value
    b"1\\\\2", b"1\\", b"\\1",  # an empty value
    b"-", b".", b"1.2.3", b"+-1", b"1-2",
    b"1234567890123456",     # more than 15 digits
    b"1,5", b"1_0",
    # malformed exponents
    b"e5", b"1e", b"-e5", b".e1", b"1e5.0", b"1e+-5", b"1e5e5", b"1ee5", b"1e5-", b"1e 5",
    b"1e+0005", b"1e-+5", b"1E5+", b"+1e5-1", b"1e5\\2-1", b"1e5\\-2+", b"1e+", b"1e5\\e",
    # beyond the exact powers of ten: left to float() itself
    b"1e1234", b"1e-23", b"1e23", b"0e-30",
])
def test_anything_else_goes_to_the_general_parser(raw):
    assert parse_decimals([raw]) == [None]


def test_only_the_block_with_an_unusual_value_goes_to_the_general_parser(monkeypatch):
    import dvheval.dicom.decimals as dec

    monkeypatch.setattr(dec, "CHUNK_BYTES", 8)
    got = dec.parse_decimals([b"1.25\\-3", b"nan\\1", b"7\\8\\9"])  # three blocks
    assert got[1] is None
    assert got[0].tolist() == [1.25, -3.0] and got[2].tolist() == [7.0, 8.0, 9.0]


def test_values_of_several_contours_stay_apart():
    got = parse_decimals([b"1\\2\\3", b"", b"4\\5\\6\\7\\8\\9"])
    assert [g.tolist() for g in got] == [[1.0, 2.0, 3.0], [], [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]]


def test_blocks_split_across_chunks(monkeypatch):
    import dvheval.dicom.decimals as dec

    monkeypatch.setattr(dec, "CHUNK_BYTES", 8)
    raws = [b"1.25\\-3", b"10\\20\\30", b"7"]
    assert [g.tolist() for g in dec.parse_decimals(raws)] == [[1.25, -3.0], [10.0, 20.0, 30.0],
                                                              [7.0]]

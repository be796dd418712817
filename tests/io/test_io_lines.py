"""Bounded line reading: a line over the bound is reported by number and size, never held."""

import io

from pixscribe.io.lines import iter_lines


def test_lines_offsets_blanks_and_a_long_line_skipped_in_pieces():
    data = b"abc\n\n  \nx\n" + b"y" * 50 + b"\nlast\r\n" + b" " * 30 + b"\nend"
    got = [(ln.number, ln.offset, ln.size, ln.data, ln.blank) for ln in iter_lines(io.BytesIO(data), 10)]
    assert got == [(1, 0, 4, b"abc", False), (2, 4, 1, b"", True), (3, 5, 3, b"  ", True), (4, 8, 2, b"x", False),
                   (5, 10, 51, None, False), (6, 61, 6, b"last", False), (7, 67, 31, None, True),
                   (8, 98, 3, b"end", False)]  # fmt: skip
    assert sum(ln.size for ln in iter_lines(io.BytesIO(data), 10)) == len(data)


def test_a_line_of_exactly_the_bound_is_kept_with_its_crlf():
    assert [ln.data for ln in iter_lines(io.BytesIO(b"0123456789\r\n0123456789"), 10)] == [b"0123456789"] * 2
    assert [ln.data for ln in iter_lines(io.BytesIO(b"0123456789A\r\n"), 10)] == [None]


class _Counting(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.largest = 0

    def readline(self, size=-1):
        line = super().readline(size)
        self.largest = max(self.largest, len(line))
        return line


def test_a_48_mb_line_is_never_read_whole():
    f = _Counting(b"ok\n" + b"z" * 48_000_000 + b"\nok\n")
    assert [(ln.data, ln.size) for ln in iter_lines(f, 1000)] == [(b"ok", 3), (None, 48_000_001), (b"ok", 3)]
    assert f.largest <= 1 << 20

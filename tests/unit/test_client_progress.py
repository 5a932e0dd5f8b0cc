"""The clients' progress display: one line redrawn in place on a terminal, plain lines otherwise."""

import io

from gateway.client.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_and_notes_above_it():
    screen = Terminal()
    progress = Progress("push f.csv", total_rows=100, stream=screen, interval=0)
    progress.advance(2_000_000, rows=50)
    progress.note("batch 2/2: retrying")
    progress.advance(2_000_000, rows=50)
    progress.finish()
    text = screen.getvalue()
    assert text.count("\r") >= 3 and "\x1b[K" in text
    assert "\r\x1b[Kbatch 2/2: retrying\n" in text
    assert "50/100 rows" in text and "ETA" in text
    last = text.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("push f.csv  100/100 rows  4.0 MB") and "MB/s" in last and "ETA" not in last
    assert text.endswith("\n")


def test_a_pipe_gets_plain_lines_at_the_interval_and_at_the_end():
    pipe = io.StringIO()
    progress = Progress("pull segment 3", stream=pipe, interval=3600)
    progress.total_bytes = 10_000_000
    progress.advance(1_000_000)
    progress.advance(1_000_000)
    assert pipe.getvalue() == ""  # nothing before the interval
    progress.finish()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in pipe.getvalue()
    assert lines[0].startswith("pull segment 3  2.0/10.0 MB") and "ETA" in lines[0]

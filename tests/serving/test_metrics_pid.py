"""serving.metrics' cached process id: what multiprocess metrics name their files by."""

from __future__ import annotations

import os

from serving.metrics import cached_pid


def test_the_cached_pid_is_this_process_and_a_forked_childs_own() -> None:
    assert cached_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report what it sees, then leave without pytest's cleanup
        os.write(write, f"{cached_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, actual = os.read(read, 64).decode().split()
    os.waitpid(child, 0)
    assert seen == actual and int(seen) == child
    assert cached_pid() == os.getpid()

"""Racing writers and a reader, in real processes."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from memstore import ConcurrentCommitError, open_store
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import CHILD, child_env, state_checksum, writer_buffer

from .base import StoreFixtures

__all__ = ["ConcurrencyTests"]


NAME = "shared"


class ConcurrencyTests(StoreFixtures):
    """Concurrent writers: exactly one wins each commit number, the other gets
    ConcurrentCommitError; readers never see a partial commit. ``tries`` saves per writer."""

    tries = 20

    def test_the_loser_of_a_race_gets_concurrent_commit_error(self, store_url, storage_options):
        """Writer B publishes between writer A's listing and A's publish (made deterministic)."""
        a = open_store(store_url, storage_options=storage_options)
        b = open_store(store_url, storage_options=storage_options)
        first, mine, theirs = writer_buffer(0, 0), writer_buffer(0, 1), writer_buffer(1, 0)
        a.save(NAME, first)
        publish = a.files.create_if_absent

        def b_commits_first(path: str, data: bytes) -> None:
            assert b.save(NAME, theirs, message="b").seq == 1
            publish(path, data)

        a.files.create_if_absent = b_commits_first
        with pytest.raises(
            ConcurrentCommitError, match=rf"version 1 of buffer '{NAME}'.*store\.load"
        ):
            a.save(NAME, mine, message="a")
        a.files.create_if_absent = publish

        assert [(c.seq, c.message) for c in a.log(NAME)] == [(0, ""), (1, "b")]
        assert_state_equal(a.load(NAME).state_dict(), theirs.state_dict())
        assert a.verify() == []  # the loser removed its snapshot: no debris
        # Reloading and retrying is the way out.
        assert a.save(NAME, mine, message="a").seq == 2
        assert_state_equal(b.load(NAME).state_dict(), mine.state_dict())

    def test_two_writers_and_a_reader(self, store_url, storage_options):
        open_store(store_url, storage_options=storage_options)  # created before anyone races
        reader = _start(["reader", store_url, NAME], storage_options)
        writers = [
            _start(["writer", store_url, NAME, str(proc), str(self.tries)], storage_options)
            for proc in (0, 1)
        ]
        try:
            for child in (reader, *writers):
                line = child.stdout.readline().strip()
                assert line == "ready", line + child.stderr.read()[-3000:]
            for child in writers:  # start both at once
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = []
            for child in writers:
                out, err = child.communicate(timeout=120)
                assert child.returncode == 0, err[-3000:]
                outputs.append(out.split("\n"))
            out, err = reader.communicate(input="", timeout=60)
            assert reader.returncode == 0, err[-3000:]
            read_lines = out.split("\n")
        finally:
            for child in (reader, *writers):
                if child.poll() is None:
                    child.kill()

        acked: dict[int, tuple[int, str]] = {}  # seq -> (writer, digest)
        lost = Counter()
        for proc, lines in enumerate(outputs):
            results = [line for line in lines if line.startswith(("ack ", "lost"))]
            assert len(results) == self.tries and lines[-2:] == ["done", ""], lines[-5:]
            for line in results:
                if line == "lost":
                    lost[proc] += 1
                    continue
                _, seq, digest = line.split()
                assert int(seq) not in acked, f"commit {seq} acknowledged twice"
                acked[int(seq)] = (proc, digest)

        store = open_store(store_url, storage_options=storage_options)
        seqs = [c.seq for c in store.log(NAME)]
        assert seqs == sorted(acked) == list(range(len(acked)))  # one manifest per won seq
        assert len(acked) + sum(lost.values()) == 2 * self.tries
        assert sum(lost.values()) >= 1, "the writers never raced; nothing was tested"
        for seq, (proc, digest) in acked.items():
            loaded = store.load(NAME, commit=seq)
            assert state_checksum(loaded.state_dict()) == digest, f"commit {seq} of writer {proc}"
            assert store.log(NAME)[seq].message == f"p{proc}"
        assert store.verify() == []  # every commit verifies; losers left no debris

        assert not [line for line in read_lines if line.startswith("error")], read_lines[:5]
        loads = int(read_lines[-2].split()[1])
        seen = [line.split() for line in read_lines if line.startswith("seen ")]
        assert loads > 0 and seen
        for _, seq, digest in seen:
            assert acked[int(seq)][1] == digest, f"reader saw commit {seq} with another content"
        print(f"wins {len(acked)}, conflicts {dict(lost)}, reader loads {loads}, saw {len(seen)}")


def _start(args: list[str], options: dict | None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(options),
        text=True,
    )

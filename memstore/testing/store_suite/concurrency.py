"""Racing writers, a reader and gc, in real processes: no lost update, no ghost commit."""

from __future__ import annotations

import subprocess
import time

import pytest

from memstore import ConcurrentCommitError, ReservoirSamplingBuffer, open_store
from memstore.policies.base import state_digest
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import CHILD, add_rows, child_env

from .base import StoreFixtures
from .files import manifest

__all__ = ["ConcurrencyTests"]


NAME = "shared"
WRITERS = 3
INITIAL = 9_000_000  # ids of the first commit's rows


class ConcurrencyTests(StoreFixtures):
    """Concurrent writers (load latest, add 10 ids, save, retry on ConcurrentCommitError):
    every commit builds on the one its content was loaded from, none is lost, none published
    below the newest; readers never see a partial commit. ``commits`` per writer."""

    commits = 30

    def test_the_loser_of_a_race_gets_concurrent_commit_error(self, store_url, storage_options):
        """Writer B publishes between writer A's listing and A's publish (made deterministic)."""
        a = open_store(store_url, storage_options=storage_options)
        b = open_store(store_url, storage_options=storage_options)
        first = ReservoirSamplingBuffer(1000, seed=0)
        add_rows(first, INITIAL)
        a.save(NAME, first)
        mine, theirs = a.load(NAME), b.load(NAME)
        add_rows(mine, 100)
        add_rows(theirs, 200)
        publish = a.files.create_if_absent

        def b_commits_first(path: str, data: bytes) -> None:
            assert b.save(NAME, theirs, message="b").seq == 1
            publish(path, data)

        a.files.create_if_absent = b_commits_first
        with pytest.raises(ConcurrentCommitError, match=rf"Commit 1 of buffer '{NAME}'.*load"):
            a.save(NAME, mine, message="a")
        a.files.create_if_absent = publish

        assert [(c.seq, c.message) for c in a.log(NAME)] == [(0, ""), (1, "b")]
        assert_state_equal(a.load(NAME).state_dict(), theirs.state_dict())
        assert a.verify() == []  # the loser removed its snapshot: no debris
        with pytest.raises(ConcurrentCommitError):  # retrying the stale buffer fails again
            a.save(NAME, mine, message="a")
        mine = a.load(NAME)  # reloading and re-applying is the way out
        add_rows(mine, 100)
        assert a.save(NAME, mine, message="a").seq == 2
        assert manifest(store_url, storage_options, NAME, 2)["parent"] == 1
        ids = set(b.load(NAME).buffer.ids.tolist())
        assert ids == set(range(INITIAL, INITIAL + 10)) | set(range(100, 110)) | set(
            range(200, 210)
        )

    def test_writers_lose_no_update(self, store_url, storage_options):
        acks, extra = self._race(store_url, storage_options, helper=["reader", NAME])
        store = open_store(store_url, storage_options=storage_options)
        seqs = [c.seq for c in store.log(NAME)]
        assert seqs == list(range(len(acks) + 1))  # one manifest per acknowledged commit
        # Every commit is its parent plus the 10 ids its writer added: nothing lost.
        expected = set(range(INITIAL, INITIAL + 10))
        for seq in seqs[1:]:
            loaded, first = acks[seq]
            assert loaded == seq - 1
            assert manifest(store_url, storage_options, NAME, seq)["parent"] == seq - 1
            expected |= set(range(first, first + 10))
            assert set(store.load(NAME, commit=seq).buffer.ids.tolist()) == expected, seq
        assert store.verify() == []

        assert not [line for line in extra if line.startswith("error")], extra[:5]
        loads = int(extra[-2].split()[1])
        seen = [line.split() for line in extra if line.startswith("seen ")]
        assert loads > 0 and seen
        digests = {}
        for _, seq, digest in seen:
            if int(seq) not in digests:
                state = store.load(NAME, commit=int(seq)).state_dict()
                digests[int(seq)] = state_digest(state)
            assert digests[int(seq)] == digest, f"reader saw commit {seq} with another content"

    def test_writers_lose_no_update_while_gc_runs(self, store_url, storage_options):
        acks, extra = self._race(store_url, storage_options, helper=["gc", "3"])
        assert not [line for line in extra if line.startswith("error")], extra[:5]
        assert int(extra[-2].split()[1]) > 0, extra  # gc ran
        store = open_store(store_url, storage_options=storage_options)
        newest = len(acks)
        store.gc(keep=3)
        assert [c.seq for c in store.log(NAME)] == [newest - 2, newest - 1, newest]
        for seq in range(1, newest + 1):  # no ghost: every acknowledged seq is on the chain
            assert acks[seq][0] == seq - 1
        for seq in (newest - 1, newest):
            assert manifest(store_url, storage_options, NAME, seq)["parent"] == seq - 1
        expected = set(range(INITIAL, INITIAL + 10))
        for _, first in acks.values():
            expected |= set(range(first, first + 10))
        final = store.load(NAME).buffer.ids.tolist()
        assert len(final) == 10 * (newest + 1) and set(final) == expected
        assert [p for p in store.verify() if p.severity == "error"] == []

    def _race(self, url: str, options: dict | None, helper: list[str]):
        """Commit 0, then WRITERS writers and a helper child; ``{seq: (loaded, first id)}``
        of the acknowledged commits and the helper's output lines."""
        store = open_store(url, storage_options=options)
        first = ReservoirSamplingBuffer(10 * (WRITERS * self.commits + 10), seed=0)
        add_rows(first, INITIAL)
        store.save(NAME, first)
        other = _start([helper[0], url, *helper[1:]], options)
        writers = [
            _start(["writer", url, NAME, str(proc), str(self.commits)], options)
            for proc in range(WRITERS)
        ]
        start = time.monotonic()
        try:
            for child in (other, *writers):
                line = child.stdout.readline().strip()
                assert line == "ready", line + child.stderr.read()[-3000:]
            for child in writers:  # start them at once
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = []
            for child in writers:
                out, err = child.communicate(timeout=900)
                assert child.returncode == 0, err[-3000:]
                outputs.append(out.split("\n"))
            out, err = other.communicate(input="", timeout=900)
            assert other.returncode == 0, err[-3000:]
        finally:
            for child in (other, *writers):
                if child.poll() is None:
                    child.kill()
        acks: dict[int, tuple[int, int]] = {}
        conflicts = 0
        for lines in outputs:
            assert lines[-2:] == ["done", ""], lines[-5:]
            results = [line.split() for line in lines if line.startswith("ack ")]
            assert len(results) == self.commits
            for _, seq, loaded, first_id in results:
                assert int(seq) not in acks, f"commit {seq} acknowledged twice"
                acks[int(seq)] = (int(loaded), int(first_id))
            conflicts += int(lines[-3].split()[1])
        assert sorted(acks) == list(range(1, WRITERS * self.commits + 1))
        assert conflicts >= 1, "the writers never raced; nothing was tested"
        print(f"{len(acks)} commits, {conflicts} conflicts, {time.monotonic() - start:.1f} s")
        return acks, out.split("\n")


def _start(args: list[str], options: dict | None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(options),
        text=True,
    )

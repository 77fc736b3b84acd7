"""Exact resume: in this process, in a fresh one, with and without models and sources."""

from __future__ import annotations

import json
import subprocess

import pytest

import memstore
from memstore import (
    ClosestToCenterSelectionStrategy,
    DetachedStrategyError,
    SourceMismatchError,
    open_store,
)
from memstore.policies.base import state_digest
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import (
    CHILD,
    NUM_STEPS,
    POLICIES,
    apply_step,
    child_env,
    make_experience,
    make_model,
    run_stream,
    strategy_for,
)

from .base import StoreFixtures
from .files import tree

__all__ = ["ResumeTests"]


class ResumeTests(StoreFixtures):
    """A saved buffer loads to the same state and continues identically."""

    @pytest.mark.parametrize("policy", list(POLICIES))
    @pytest.mark.parametrize("saved_after", [1, 3])
    def test_save_load_then_continue_equals_uninterrupted(
        self, store_url, storage_options, sources, policy, saved_after
    ):
        buf = run_stream(policy, saved_after, sources)
        store = open_store(store_url, storage_options=storage_options)
        commit = store.save("buf", buf, message=f"after {saved_after}", sources=sources)
        assert (commit.seq, commit.message) == (0, f"after {saved_after}")
        assert commit.sizes["rows"] == len(buf)
        assert store.next_experience("buf") == saved_after

        loaded = store.load("buf", sources=sources, selection_strategy=strategy_for(policy))
        assert type(loaded) is type(buf)
        assert_state_equal(loaded.state_dict(), buf.state_dict())
        for step in range(saved_after, NUM_STEPS):
            apply_step(loaded, step, sources)
        assert_state_equal(loaded.state_dict(), run_stream(policy, NUM_STEPS, sources).state_dict())

    def test_resume_in_a_fresh_process_equals_uninterrupted(
        self, store_url, storage_options, sources
    ):
        """Every policy, saved after 1 and after 3 steps; one child process resumes them all."""
        store = open_store(store_url, storage_options=storage_options)
        jobs, expected = [], {}
        for policy in POLICIES:
            for saved_after in (1, 3):
                name = f"{policy}-{saved_after}"
                store.save(name, run_stream(policy, saved_after, sources), sources=sources)
                jobs.append({"name": name, "policy": policy})
                expected[name] = run_stream(policy, NUM_STEPS, sources).state_dict()
        proc = subprocess.run(
            [*CHILD, "resume", store_url, json.dumps(jobs)],
            env=child_env(storage_options),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])

        failures = []
        for job in jobs:
            name, policy = job["name"], job["policy"]
            assert report[name]["start"] == int(name.rsplit("-", 1)[1])
            assert report[name]["seq"] == 1
            loaded = store.load(name, selection_strategy=strategy_for(policy))
            try:
                assert_state_equal(loaded.state_dict(), expected[name])
                assert report[name]["checksum"] == state_digest(expected[name])
            except AssertionError as err:
                failures.append(f"{name}: {err}")
        assert not failures, "\n".join(failures)

    def test_feature_based_buffer_loads_detached_and_refuses_to_update(
        self, store_url, storage_options, sources
    ):
        buf = run_stream("herding-class", 3, sources)
        store = open_store(store_url, storage_options=storage_options)
        store.save("h", buf)
        loaded = store.load("h")  # no model: inspectable, replayable, not updatable
        assert_state_equal(loaded.state_dict(), buf.state_dict())
        assert loaded.buffer.ids.tolist() == buf.buffer.ids.tolist()
        before = loaded.state_dict()
        pattern = r"store\.load\(.*selection_strategy=HerdingSelectionStrategy\(model, 'feat'\)"
        with pytest.raises(DetachedStrategyError, match=pattern):
            loaded.update(make_experience(3, sources), sources=sources)
        with pytest.raises(DetachedStrategyError, match=pattern):
            loaded.resize(10, sources=sources)
        assert_state_equal(loaded.state_dict(), before)

        # A strategy of another class than the recorded one is refused.
        with pytest.raises(ValueError, match="HerdingSelectionStrategy"):
            store.load(
                "h", selection_strategy=ClosestToCenterSelectionStrategy(make_model(), "feat")
            )

    def test_source_fingerprint_mismatch_is_refused_unless_allowed(
        self, store_url, storage_options, sources
    ):
        buf = run_stream("class", 3, sources)
        store = open_store(store_url, storage_options=storage_options)
        store.save("c", buf, sources=sources)
        before = tree(store_url, storage_options)

        other = dict(sources)
        a = sources["a"]
        other["a"] = memstore.ArraySource(a.inputs, (a.targets + 1) % 10)
        with pytest.raises(SourceMismatchError, match=r"'a'.*allow_source_mismatch=True"):
            store.load("c", sources=other)
        loaded = store.load("c", sources=other, allow_source_mismatch=True)
        assert_state_equal(loaded.state_dict(), buf.state_dict())
        # Same sources, a subset of them, or none at all: no complaint.
        assert_state_equal(store.load("c", sources=sources).state_dict(), buf.state_dict())
        assert_state_equal(
            store.load("c", sources={"b": sources["b"]}).state_dict(), buf.state_dict()
        )
        assert len(store.load("c")) == len(buf)
        assert tree(store_url, storage_options) == before

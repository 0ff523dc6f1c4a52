"""The timer's wakes (scheduling/wakes.py): a far-off wake waits in its hour's bucket and joins the heap in time, so
every job's current wake comes out of the heap once, in the step that reaches it; stale entries are skipped as the
scheduler skips them. And the catalogue's live view of its active ids (the desired set) counts what it holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.cluster.catalogue import Summaries
from node.model.jobs import JobSummary
from node.scheduling.wakes import FAR, Wakes, bucket_of

T = 1_800_000_000.0  # a wall-clock second in 2027

pushes = st.lists(st.tuples(st.integers(0, 19), st.floats(0, 4 * 86_400)), min_size=1, max_size=60)
steps = st.lists(st.floats(0.01, 900.0), min_size=5, max_size=60)


@settings(max_examples=300, deadline=None)
@given(pushes, pushes, steps)
def test_every_current_wake_comes_out_once_in_the_step_that_reaches_it(first: list[tuple[int, float]],
                                                                       later: list[tuple[int, float]],
                                                                       advances: list[float]) -> None:
    w = Wakes()
    now = T
    current: dict[str, float] = {}  # each job's wake as its record holds it (the scheduler's ``o.wake``)

    def push(job: str, wake: float) -> None:
        current[job] = wake
        w.push(wake, job, now)

    for j, dt in first:
        push(f"j{j}", now + dt)
    fired: list[tuple[str, float]] = []
    prev = now
    for k, step in enumerate(advances):
        now += step
        if k == 1:
            for j, dt in later:  # jobs pushed again: their first entries are stale now
                push(f"j{j}", now + dt)
        for b, ids in w.ripe(now):  # (the scheduler's _ripen)
            for j in ids:
                if j in current and bucket_of(current[j]) == b:
                    w.near(current[j], j)
        seen: set[str] = set()
        while (first_wake := w.first()) is not None and first_wake <= now:
            wake, j = w.pop()
            if current.get(j) == wake and j not in seen:
                seen.add(j)
                fired.append((j, wake))
                assert prev < wake <= now or wake <= T + advances[0], (j, wake, prev, now)
                del current[j]  # (fired: its next wake would be pushed anew)
        prev = now
    for j, wake in current.items():
        assert wake > now, (j, wake, now)  # nothing due was left behind, in the heap or a bucket
    assert len(fired) == len(set(fired))  # each wake once


def test_a_far_wake_costs_a_list_slot_not_a_heap_entry() -> None:
    w = Wakes()
    for i in range(1000):
        w.push(T + 30 * 86_400 + i, f"j{i}", T)
    assert w.heap == [] and sum(len(v) for v in w.far.values()) == 1000 and len(w) == 1000
    assert w.ripe(T) == []  # a month away: not yet
    ripe = w.ripe(T + 30 * 86_400 - FAR + 1)
    assert [len(ids) for _, ids in ripe] and sum(len(ids) for _, ids in ripe) == 1000 and not w.far


def test_a_near_wake_that_is_the_first_says_so() -> None:
    w = Wakes()
    assert w.push(T + 10, "a", T)
    assert not w.push(T + 20, "b", T)
    assert w.push(T + 5, "c", T)
    assert not w.push(T + FAR + 5, "d", T)  # a bucket's: the timer need not wake for it


summaries = st.lists(st.tuples(st.integers(0, 15), st.integers(1, 5), st.booleans(), st.booleans(), st.booleans()),
                     max_size=80)


@settings(max_examples=300, deadline=None)
@given(summaries, st.lists(st.integers(0, 15), max_size=10))
def test_the_active_view_is_the_active_ids_as_they_change(ops: list[tuple[int, int, bool, bool, bool]],
                                                         drops: list[int]) -> None:
    from node.cluster.catalogue import ActiveIds
    s = Summaries()
    view = ActiveIds(s)
    for i, v, paused, deleted, completed in ops:
        s[f"j{i}"] = JobSummary(id=f"j{i}", version=v, paused=paused, deleted=deleted, completed=completed)
        assert len(view) == len(s.active_ids()) and set(view) == set(s.active_ids())
    for i in drops:
        s.drop(f"j{i}")
        if f"j{i + 1}" in s:
            del s[f"j{i + 1}"]
        assert len(view) == len(s.active_ids()) and set(view) == set(s.active_ids())
        every = [f"j{k}" for k in range(17)]
        assert all((j in view) == (j in s.active_ids()) for j in every)
        assert view.missing(every) == [j for j in every if j not in s.active_ids()]

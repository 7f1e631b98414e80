"""videodata/cache/decode_pool.py: the timeout clock starts when a worker begins a task, so a slow
worker start-up is not a timeout; a hung task and a worker that never begins are still killed."""

from tests.helpers.cache_faults import echo, sleep_for, slow_start
from videodata.cache.decode_pool import DecodePool, Failure

# The forkserver imports the task functions' module with the test process's sys.path.
PRELOAD = ["tests.helpers.cache_faults"]


def test_slow_worker_start_up_does_not_count_against_the_timeout():
    """Workers take 2 s to start (a loaded machine) but each task is instant: a 1 s timeout holds."""
    with DecodePool(echo, num_workers=2, timeout_s=1.0, initializer=slow_start, preload=PRELOAD) as pool:
        results = list(pool.imap(range(5), window=4))
        assert results == [(i, i) for i in range(5)]
        assert pool.num_replaced == 0


def test_a_hung_task_times_out_and_its_worker_is_replaced():
    with DecodePool(sleep_for, num_workers=1, timeout_s=1.0, preload=PRELOAD) as pool:
        results = [r for _, r in pool.imap([0.0, 3600.0, 0.0], window=3)]
    assert results[0] == results[2] == 0.0
    assert isinstance(results[1], Failure) and results[1].kind == "timeout", results[1]
    assert "longer than 1 s" in results[1].detail and pool.num_replaced == 1


def test_a_worker_that_never_begins_its_task_times_out():
    with DecodePool(
        echo, num_workers=1, timeout_s=60.0, startup_timeout_s=0.5, initializer=slow_start, preload=PRELOAD
    ) as pool:
        [(_, result)] = list(pool.imap([7], window=1))
    assert isinstance(result, Failure) and result.kind == "timeout" and "did not begin" in result.detail, result


def test_an_imap_left_early_does_not_hand_its_results_to_the_next_one():
    """The consumer of the first imap stops after one result while the workers still hold its slower tasks; the
    second imap numbered its tasks from 0 again and took those stale results as its own (0.3 -> 1.0)."""
    with DecodePool(sleep_for, num_workers=2, timeout_s=30.0, preload=PRELOAD) as pool:
        for _ in pool.imap([0.0, 1.0, 1.5], window=3):
            break
        assert list(pool.imap([0.2, 0.3, 0.4], window=3)) == [(0.2, 0.2), (0.3, 0.3), (0.4, 0.4)]

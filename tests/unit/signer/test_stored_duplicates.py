"""When the signer looks up which events of a batch are already stored before preparing it: only after meeting
one, and until enough batches in a row found none."""

from __future__ import annotations

from services.signer.appender import STORED_CHECK_BATCHES, StoredDuplicates


def test_batches_are_prepared_without_the_lookup_until_a_duplicate_is_met() -> None:
    stored = StoredDuplicates()
    assert stored.batches == STORED_CHECK_BATCHES
    assert not stored.look_up
    stored.met()
    assert stored.look_up


def test_the_lookup_stops_after_as_many_clean_batches_in_a_row() -> None:
    stored = StoredDuplicates(batches=3)
    stored.met()
    for _ in range(2):
        stored.looked_up(found=False)
        assert stored.look_up
    stored.looked_up(found=False)
    assert not stored.look_up


def test_a_duplicate_found_starts_the_count_again() -> None:
    stored = StoredDuplicates(batches=3)
    stored.met()
    stored.looked_up(found=False)
    stored.looked_up(found=False)
    stored.looked_up(found=True)
    for _ in range(2):
        stored.looked_up(found=False)
        assert stored.look_up
    stored.looked_up(found=False)
    assert not stored.look_up
    stored.met()  # refused by the unique index: looked up again
    assert stored.look_up


def test_a_lookup_made_without_need_changes_nothing() -> None:
    stored = StoredDuplicates(batches=3)
    stored.looked_up(found=False)
    assert not stored.look_up
    stored.looked_up(found=True)
    assert stored.look_up

"""compiler/overlay.py: an Overlay is the mapping a dict would be after the same changes, whatever the
changes, folded or not; and it never changes the mapping it was made from."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from compiler import overlay
from compiler.overlay import Overlay

KEYS = st.integers(0, 40)
BATCH = st.tuples(st.lists(st.tuples(KEYS, st.integers()), max_size=8), st.lists(KEYS, max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, st.integers(), max_size=30), st.lists(BATCH, max_size=12), st.integers(1, 6))
def test_an_overlay_is_the_dict_after_the_same_changes(start, batches, fold_at_least):
    original = overlay.FOLD_AT_LEAST
    overlay.FOLD_AT_LEAST = fold_at_least  # fold often and seldom: both must be invisible
    try:
        model, current = dict(start), Overlay.of(start)
        history = [(current, dict(model))]
        for put, delete in batches:
            for key in delete:
                model.pop(key, None)
            model.update(put)
            current = current.changed(put, delete)
            history.append((current, dict(model)))
        for mapping, expected in history:  # each one as it was made, though others were made from it
            assert dict(mapping) == expected and len(mapping) == len(expected)
            assert sorted(mapping) == sorted(expected)
            for key in range(-1, 42):
                assert (key in mapping) == (key in expected)
                assert mapping.get(key, "none") == expected.get(key, "none")
    finally:
        overlay.FOLD_AT_LEAST = original


def test_changes_fold_into_a_plain_dict_once_they_are_a_sixteenth_of_it():
    base = Overlay.of({i: i for i in range(overlay.FOLD_AT_LEAST * overlay.FOLD)})
    step = base.changed([(-1, 0)], [0])
    assert step._base is base._base and len(step._changes) == 2  # shared, not copied
    for i in range(1, overlay.FOLD_AT_LEAST - 2):
        step = step.changed([(-1 - i, 0)])
    assert step._base is base._base and len(step._changes) == overlay.FOLD_AT_LEAST - 1
    step = step.changed([(-overlay.FOLD_AT_LEAST, 0)])
    assert step._base is not base._base and not step._changes
    assert len(step) == len(base) + overlay.FOLD_AT_LEAST - 2 and 0 not in step and step[-5] == 0  # 1,023 added, 1 gone

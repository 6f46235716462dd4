"""gcl-synth run --per-class N: the first N images of each class, after --limit, in input order."""

from __future__ import annotations

import pytest

from gcl.errors import UserError
from gcl.inputs import InputItem, InputSet
from gcl.synth.plan import SynthOptions, make_plan

LABELS = [0, 1, 0, 2, 1, 0, 2, 2, 1, 0, 1, 2]


def _inputs(labels):
    items = [InputItem(f"x/{i:07d}", "x.npz", i, label) for i, label in enumerate(labels)]
    return InputSet(items, ["a", "b", "c"], "flat", "x")


def _plan(inputs, **kw):
    options = SynthOptions(generator="taesd:taef2", weights_sha256="0" * 64, recipe="noise", views=1, resolution=64,
                           image_format="jpg", quality=95, seed=0, batch_size=8, dtype="float32", device_type="cpu")
    return make_plan(inputs, "out", "set", 4, options, **kw)


def test_per_class_takes_the_first_n_of_each_class_in_input_order():
    plan = _plan(_inputs(LABELS), per_class=2)
    chosen = [it.index for t in plan.tasks for it in t.items]
    assert chosen == [0, 1, 2, 3, 4, 6]  # 0:{0,2} 1:{1,4} 2:{3,6}
    assert [len(t.items) for t in plan.tasks] == [4, 2] and plan.num_inputs == 6
    assert plan.input_fingerprint.endswith("/per_class=2")


def test_limit_applies_first_and_fingerprints_differ():
    plan = _plan(_inputs(LABELS), limit=10, per_class=3)
    assert sorted(it.index for t in plan.tasks for it in t.items) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert _plan(_inputs(LABELS), per_class=3).fingerprint != plan.fingerprint


def test_too_few_images_of_a_class_or_no_labels_is_one_line():
    with pytest.raises(UserError, match=r"--per-class 5: class\(es\) 0, 1, 2 have fewer images"):
        _plan(_inputs(LABELS), per_class=5)
    with pytest.raises(UserError, match="needs labelled inputs"):
        _plan(_inputs([None] * 4), per_class=1)

"""gcl-eval streams labelled sets in batches: the same kNN / linear numbers as scoring the whole set
held in memory, the feature cache still hits, and an npz is read row by row, never loaded whole."""

import os

import numpy as np
import torch
from PIL import Image

from gcl.eval.features import raw_pixel_encoder
from gcl.eval.linear import LinearRecipe, linear_accuracy
from gcl.eval.probe import run_probe
from gcl.inputs import NpzCache
from gcl.knn import knn_accuracy
from gcl.labelled import LabelledSource, load_labelled

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _sets(tmp_path, cifar_test_npz):
    """A 72-image train npz (stored, not compressed) and a 30-image test ImageFolder of PNGs."""
    with np.load(cifar_test_npz) as z:
        images, labels, names = z["images"][:102], z["labels"][:102], z["class_names"]
    train = tmp_path / "train.npz"
    np.savez(train, images=images[:72], labels=labels[:72], class_names=names)
    test = tmp_path / "test"
    for i in range(72, 102):
        folder = test / str(names[labels[i]])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    for name in names:  # every class folder exists (the class list is the folders')
        (test / str(name)).mkdir(exist_ok=True)
    return train, test, images, labels


def _whole_set_scores(encoder, images, labels, names_test_order):
    """What gcl-eval computed before streaming: every image in memory, features in 256-batches."""
    xtr, ytr = images[:72], labels[:72]
    order = sorted(range(72, 102), key=lambda i: (str(names_test_order[labels[i]]), f"{i:04d}"))
    xte, yte = images[order], labels[order]
    ftr = torch.cat([encoder.forward(xtr[i:i + 256]) for i in range(0, len(xtr), 256)])
    fte = encoder.forward(xte)
    ytr_t, yte_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    knn = knn_accuracy(ftr, ytr_t, fte, yte_t, 10, k=20, temperature=0.07)
    lin = linear_accuracy(ftr, ytr_t, fte, yte_t, 10, LinearRecipe(epochs=5))
    return knn["top1"], lin["top1"]


def test_streamed_probes_match_the_whole_set_in_memory(tmp_path, cifar_test_npz):
    train, test, images, labels = _sets(tmp_path, cifar_test_npz)
    with np.load(cifar_test_npz) as z:
        names = z["class_names"]
    encoder = raw_pixel_encoder(32)
    knn_before, lin_before = _whole_set_scores(encoder, images, labels, names)
    common = dict(cache_dir=tmp_path / "cache", batch_size=7, log=lambda _m: None)  # 7: batches cut unevenly
    knn = run_probe("knn", encoder, str(train), str(test), **common)
    lin = run_probe("linear", encoder, str(train), str(test), recipe=LinearRecipe(epochs=5), **common)
    assert knn["n_train"] == 72 and knn["n_test"] == 30
    assert knn["top1"] == knn_before and lin["top1"] == lin_before
    again = run_probe("knn", encoder, str(train), str(test), **common)  # from the feature cache
    assert again["top1"] == knn_before and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    assert str(train) not in NpzCache._arrays  # read row by row, never loaded whole


def test_source_passes_repeat_and_count_skips(tmp_path, cifar_test_npz):
    _train, test, _images, _labels = _sets(tmp_path, cifar_test_npz)
    (test / "airplane" / "broken.png").write_bytes(b"\x89PNG not really")
    source = LabelledSource(test, resolution=16)
    first = [b for b in source.batches(8)]
    assert [len(b[1]) for b in first] == [8, 8, 8, 6] and source.skipped == 1 and source.shape == (16, 16, 3)
    second = list(source.batches(30))
    assert np.array_equal(np.concatenate([b[0] for b in first]), second[0][0])
    whole = load_labelled(test, resolution=16)
    assert np.array_equal(whole.images, second[0][0]) and np.array_equal(whole.labels, source.labels)

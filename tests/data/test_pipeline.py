"""The grain pipeline: determinism, aligned augmentation, padding, sharding, checkpointing."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxseg.data as data
from jaxseg.data import Shard, SyntheticScenes, eval_loader, train_loader
from jaxseg.data.base import DatasetInfo, default_palette
from jaxseg.data.transforms import TrainTransform
from jaxseg.errors import JaxsegError

ONE = Shard(0, 1)


class BlockDataset:
    """Images of square blocks of random grey levels; the label is a function of the pixel
    (level // 32), so any misalignment between image and label shows."""

    info = DatasetInfo("blocks", tuple(f"c{i}" for i in range(8)), default_palette(8))

    def __init__(self, n=12, size=(24, 36), block=4):
        self.n, self.size, self.block = n, size, block

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        levels = rng.integers(0, 8, (self.size[0] // self.block, self.size[1] // self.block))
        grey = np.kron(levels * 32 + 16, np.ones((self.block, self.block), np.int64))
        grey = grey.astype(np.uint8)
        image = np.stack([grey, 255 - grey, grey // 2], axis=-1)
        return {"image": image, "label": grey // 32, "index": index}


def label_of(image_float):
    return np.round(image_float[..., 0] * 255).astype(np.int32) // 32


def take(loader, steps):
    return [next(loader) for _ in range(steps)]


def synthetic(n=48, size=(32, 32)):
    return SyntheticScenes("train", size=size, num_examples=n)


def test_batch_format():
    batch = next(train_loader(synthetic(), 8, 24, shard=ONE))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 24, 24, 3)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8, 24, 24)
    assert batch["valid"].all() and batch["index"].dtype == np.int32
    raw = next(train_loader(synthetic(), 8, 24, shard=ONE, image_dtype=np.uint8))
    np.testing.assert_allclose(raw["image"] / 255.0, batch["image"], atol=1e-6)


def test_deterministic_for_a_seed():
    def run(seed):
        return take(train_loader(synthetic(), 8, 24, short_side_range=(20, 48), seed=seed,
                                 shard=ONE, num_threads=3), 4)

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(first[0]["index"], other[0]["index"])


def test_epochs_cover_the_data_once_and_reshuffle():
    loader = train_loader(synthetic(n=50), 8, 24, shard=ONE)  # 6 steps an epoch, 2 dropped
    assert loader.steps_per_epoch == 6
    epochs = [np.concatenate([b["index"] for b in take(loader, 6)]) for _ in range(2)]
    for seen in epochs:
        assert len(set(seen.tolist())) == 48 and set(seen.tolist()) <= set(range(50))
    assert not np.array_equal(epochs[0], epochs[1])
    assert loader.epoch == 2


def test_finite_epochs_end():
    loader = train_loader(synthetic(n=16), 8, 24, num_epochs=2, shard=ONE)
    assert len(loader) == 4 and len(list(loader)) == 4


def test_augmentation_keeps_image_and_label_aligned_exactly_without_resize():
    loader = train_loader(BlockDataset(), 4, (16, 20), shard=ONE, flip_prob=0.5)
    for batch in take(loader, 6):
        np.testing.assert_array_equal(batch["label"], label_of(batch["image"]))
        image = np.round(batch["image"] * 255).astype(np.int32)  # channels moved together
        np.testing.assert_array_equal(image[..., 1], 255 - image[..., 0])


def test_flip_happens_and_is_aligned():
    item = BlockDataset()[0]
    out = TrainTransform((24, 36), None, flip_prob=1.0).random_map(item,
                                                                   np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], item["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], item["label"][:, ::-1])


def test_augmentation_with_resize_stays_aligned():
    loader = train_loader(BlockDataset(size=(48, 72), block=8), 4, (32, 32),
                          short_side_range=(24, 96), shard=ONE)
    agree, shifted = [], []
    for batch in take(loader, 6):
        labelled = batch["label"] != 255
        derived = label_of(batch["image"])
        agree.append(np.mean(derived[labelled] == batch["label"][labelled]))
        off_by_2 = np.roll(batch["label"], 2, axis=2)  # what a 2-pixel misalignment gives
        shifted.append(np.mean(derived[labelled] == off_by_2[labelled]))
    # bilinear image vs nearest label differ only along block edges
    assert min(agree) > 0.8 and np.mean(agree) > 0.85
    assert np.mean(shifted) < np.mean(agree) - 0.1


def test_crop_padding_uses_0_for_image_and_255_for_label():
    loader = train_loader(BlockDataset(size=(20, 28)), 2, (32, 40), shard=ONE)
    for batch in take(loader, 3):
        label, image = batch["label"], batch["image"]
        assert (label[:, 20:, :] == 255).all() and (label[:, :, 28:] == 255).all()
        assert (image[:, 20:, :] == 0).all() and (image[:, :, 28:] == 0).all()
        assert (label[:, :20, :28] != 255).all()  # padding only bottom/right


def test_short_side_resize_follows_torchvision():
    from jaxseg.data.transforms import short_side_size

    assert short_side_size(180, 240, 90) == (90, 120)
    assert short_side_size(375, 500, 520) == (520, 693)  # long side truncated, as torchvision
    assert short_side_size(500, 333, 260) == (390, 260)


def test_checkpoint_restores_the_position():
    loader = train_loader(synthetic(), 8, 24, short_side_range=(20, 48), seed=5, shard=ONE)
    take(loader, 3)
    state = json.loads(json.dumps(loader.get_state()))  # JSON-able
    expected = take(loader, 4)  # crosses into the second epoch
    fresh = train_loader(synthetic(), 8, 24, short_side_range=(20, 48), seed=5, shard=ONE)
    fresh.set_state(state)
    assert fresh.step == 3
    for a, b in zip(expected, take(fresh, 4)):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["image"], b["image"])
    other = train_loader(synthetic(), 8, 24, seed=6, shard=ONE)
    with pytest.raises(JaxsegError, match="different pipeline"):
        other.set_state(state)


def test_checkpoint_restores_across_a_change_of_process_count():
    def loader(shard):
        return train_loader(synthetic(), 8, 24, seed=2, shard=shard)

    single = loader(ONE)
    take(single, 2)
    state = single.get_state()
    global_batch = next(single)
    parts = []
    for p in range(2):
        resumed = loader(Shard(p, 2))
        resumed.set_state(state)
        parts.append(next(resumed))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in parts]),
                                  global_batch["index"])


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_are_disjoint_covering_and_form_the_global_batch(count):
    steps = 5
    single = take(train_loader(synthetic(n=40), 8, 24, short_side_range=(20, 40), seed=9,
                               shard=ONE), steps)
    shards = [take(train_loader(synthetic(n=40), 8, 24, short_side_range=(20, 40), seed=9,
                                shard=Shard(p, count)), steps) for p in range(count)]
    seen = []
    for step in range(steps):
        parts = [shards[p][step] for p in range(count)]
        assert all(len(part["index"]) == 8 // count for part in parts)
        stacked = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        for key in stacked:  # same global batch, whatever the number of processes
            np.testing.assert_array_equal(stacked[key], single[step][key])
        seen.extend(stacked["index"].tolist())
    assert len(seen) == len(set(seen)) == 40  # one epoch: disjoint, covering


@pytest.mark.parametrize("count", [1, 2, 3])
def test_eval_shards_cover_every_example_once(count):
    ds = synthetic(n=10, size=(16, 16))
    seen, steps = [], set()
    for p in range(count):
        loader = eval_loader(ds, 3 * count, shard=Shard(p, count))
        batches = list(loader)
        steps.add(len(batches))
        for batch in batches:
            real = batch["index"] >= 0
            np.testing.assert_array_equal(batch["valid"], real)
            assert (batch["label"][~real] == 255).all() and (batch["image"][~real] == 0).all()
            seen.extend(batch["index"][real].tolist())
    assert len(steps) == 1  # every process runs the same number of steps
    assert sorted(seen) == list(range(10))


def test_eval_resize_and_pad_to(tmp_path):
    item = synthetic(n=4, size=(30, 40))
    loader = eval_loader(item, 2, short_side=15, pad_to=(16, 24), shard=ONE)
    batch = next(loader)
    assert batch["label"].shape == (2, 16, 24)
    assert (batch["label"][:, 15:, :] == 255).all() and (batch["label"][:, :, 20:] == 255).all()
    with pytest.raises(JaxsegError, match=r"larger than pad_to=\(16, 16\)"):
        next(eval_loader(item, 2, short_side=15, pad_to=16, shard=ONE))


def test_eval_mixed_sizes_need_pad_to():
    class Mixed(BlockDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            if index % 2:
                item = {**item, "image": item["image"][:20], "label": item["label"][:20]}
            return item

    with pytest.raises(JaxsegError, match="cannot batch examples of different sizes"):
        next(eval_loader(Mixed(n=4), 2, shard=ONE))
    batch = next(eval_loader(Mixed(n=4), 2, pad_to=(24, 36), shard=ONE))
    assert (batch["label"][1, 20:] == 255).all()


def _bad_voc(tmp_path):
    from tests.data.test_folders import make_voc

    make_voc(str(tmp_path), ids=("a", "b", "c", "d"), size=(30, 40))
    (tmp_path / "JPEGImages" / "c.jpg").write_bytes(b"broken")
    return data.voc(str(tmp_path), skip_bad=True)


def test_skip_bad_in_the_pipeline_gives_ignored_blanks_and_counts(tmp_path):
    ds = _bad_voc(tmp_path)
    loader = eval_loader(ds, 2, shard=ONE)
    batches = list(loader)
    assert loader.skipped == 1 and ds.num_skipped == 1
    blank = batches[1]
    assert blank["index"].tolist() == [2, 3] and blank["valid"].tolist() == [False, True]
    assert (blank["label"][0] == 255).all() and blank["label"].shape == (2, 30, 40)
    train = train_loader(ds, 4, (24, 24), shard=ONE)
    batch = next(train)
    assert train.skipped == 1 and (batch["label"][~batch["valid"]] == 255).all()
    with pytest.raises(JaxsegError, match=r"cannot read image .*c\.jpg"):
        list(eval_loader(data.voc(str(tmp_path)), 2, shard=ONE))


def test_batch_size_checks():
    with pytest.raises(JaxsegError, match="multiple of the process count 3"):
        train_loader(synthetic(), 8, 24, shard=Shard(0, 3))
    with pytest.raises(JaxsegError, match="smaller than one global batch"):
        train_loader(synthetic(n=4), 8, 24, shard=ONE)
    with pytest.raises(JaxsegError, match="shard index 2"):
        Shard(2, 2)


def test_global_batches_assemble_jax_arrays():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    loader = train_loader(synthetic(), 8, 24, shard=Shard.from_jax())
    batch = next(loader.global_batches(sharding))
    assert isinstance(batch["image"], jax.Array) and batch["image"].shape == (8, 24, 24, 3)
    assert batch["label"].dtype == np.int32 and batch["image"].sharding == sharding


def test_worker_processes_give_the_same_batches():
    def run(workers):
        with train_loader(synthetic(n=16), 4, 24, seed=3, shard=ONE,
                          num_workers=workers) as loader:
            return [{k: np.array(v) for k, v in batch.items()} for batch in take(loader, 3)]

    for a, b in zip(run(0), run(1)):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_closed_loader_refuses_to_continue():
    loader = train_loader(synthetic(), 8, 24, shard=ONE)
    next(loader)
    loader.close()
    loader.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(loader)

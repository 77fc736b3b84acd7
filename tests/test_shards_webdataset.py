"""Issue 12, item 1: ShardSource decodes with webdataset's own handlers, so ``source[i]`` and
``get_many`` equal what ``webdataset.WebDataset(urls, shardshuffle=False).decode(...)`` (and
``.map(...)``) yields for that sample, on JPEG / PNG / npy / cls / json shards; streaming for
feature extraction runs through webdataset's tar reader."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from memstore.errors import CorruptShardError
from memstore.sources.shards import ShardSource

N, SHARDS = 10, 2


def _image_bytes(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of 5 samples: jpg (RGB), png (gray), input.npy, cls, meta.json."""
    root = tmp_path_factory.mktemp("wds")
    rng = np.random.default_rng(0)
    urls = [str(root / f"mixed-{s}.tar") for s in range(SHARDS)]
    for s, url in enumerate(urls):
        with wds.TarWriter(url) as sink:  # webdataset's writer, its encoders and float mtime
            for i in range(s * N // SHARDS, (s + 1) * N // SHARDS):
                sink.write(
                    {
                        "__key__": f"sample{i:03d}",
                        "jpg": _image_bytes(rng.integers(0, 256, (6, 8, 3), np.uint8), "JPEG"),
                        "png": _image_bytes(rng.integers(0, 256, (5, 7), np.uint8), "PNG"),
                        "input.npy": rng.standard_normal((2, 3)).astype(np.float32),
                        "cls": int(i % 3),
                        "meta.json": {"i": i, "name": f"n{i}"},
                    }
                )
    return urls


def _same(a, b) -> bool:
    """Deep equality of decoded samples (PIL images, arrays, tensors, dicts, scalars)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, Image.Image):
        return isinstance(b, Image.Image) and (a.mode, a.size, a.tobytes()) == (
            b.mode,
            b.size,
            b.tobytes(),
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


def upper_txt(key, data):
    """A custom webdataset handler: ``.json`` members as upper-cased text."""
    return data.decode().upper() if key.endswith(".json") else None


def pair(sample):
    return sample["png"], sample["cls"]


SPECS = [
    ("pil",),
    ("torchrgb",),
    ("rgb8",),
    ("l",),
    ("torch",),
    (upper_txt,),
    (["l8", upper_txt],),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: repr(s[0])[:20])
def test_items_equal_the_webdataset_pipeline(shards, spec):
    (decode,) = spec
    args = decode if isinstance(decode, list) else [decode]
    reference = list(wds.WebDataset(shards, shardshuffle=False).decode(*args))
    src = ShardSource(shards, decode=decode, progress=False, name="mixed")
    assert len(reference) == len(src) == N
    for i, ref in enumerate(reference):
        assert _same(src[i], ref), i
    ids = np.random.default_rng(1).permutation(N)
    assert all(_same(a, reference[i]) for a, i in zip(src.get_many(ids), ids, strict=True))


def test_decoder_instance_transform_and_raw_members(shards):
    decoder = wds.autodecode.Decoder([wds.imagehandler("torchl8")], only=["png"])
    reference = list(wds.WebDataset(shards, shardshuffle=False).map(decoder).map(pair))
    src = ShardSource(shards, decode=decoder, transform=pair, progress=False)
    assert all(_same(src[i], ref) for i, ref in enumerate(reference))
    assert _same(src.get_many([7, 2]), [reference[7], reference[2]])
    raw = list(wds.WebDataset(shards, shardshuffle=False))
    assert src.get_raw([3, 9]) == [raw[3], raw[9]]  # original bytes, whatever decode is
    # decode=True: (input, target) with the input decoded by webdataset's "torch" image spec.
    tuples = ShardSource(shards, input_key="jpg", progress=False)
    torch_ref = list(wds.WebDataset(shards, shardshuffle=False).decode("torch"))
    for i, ref in enumerate(torch_ref):
        x, y = tuples[i]
        assert _same(x, ref["jpg"]) and y == ref["cls"] == i % 3
    npy = ShardSource(shards, input_key="input.npy", progress=False)
    plain = list(wds.WebDataset(shards, shardshuffle=False).decode())
    assert all(_same(npy[i][0], torch.from_numpy(ref["input.npy"])) for i, ref in enumerate(plain))
    clone = pickle.loads(pickle.dumps(src))
    assert _same(clone[4], reference[4])


def test_streaming_runs_through_webdataset(shards, monkeypatch):
    ref = list(wds.WebDataset(shards, shardshuffle=False).decode("torchrgb"))
    src = ShardSource(shards, decode="torchrgb", input_key="jpg", progress=False)
    batches = list(src.iter_batches(batch_size=4))
    assert [len(ids) for ids, _ in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([ids for ids, _ in batches]), np.arange(N))
    assert torch.equal(torch.cat([b for _, b in batches]), torch.stack([r["jpg"] for r in ref]))
    sub = np.array([9, 0, 4])
    (ids, inputs), *_ = list(src.iter_batches(sub, batch_size=8))
    np.testing.assert_array_equal(ids, sub)
    assert torch.equal(inputs, torch.stack([ref[i]["jpg"] for i in sub]))
    from memstore.sources.shards.read import ShardReader

    def no_offset_reads(*args, **kwargs):
        raise AssertionError("read by offset instead of streamed")

    monkeypatch.setattr(ShardReader, "get_many", no_offset_reads)
    dense = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9])  # ascending, most of the shards: streamed
    batches = list(src.iter_batches(dense, batch_size=4))
    np.testing.assert_array_equal(np.concatenate([ids for ids, _ in batches]), dense)
    assert torch.equal(
        torch.cat([b for _, b in batches]), torch.stack([ref[i]["jpg"] for i in dense])
    )
    monkeypatch.undo()
    tuples = ShardSource(shards, input_key="png", transform=lambda it: it[0] * 2, progress=False)
    streamed = torch.cat([b for _, b in tuples.iter_batches(batch_size=3)])
    torch_ref = list(wds.WebDataset(shards, shardshuffle=False).decode("torch"))
    assert torch.equal(streamed, torch.stack([r["png"] * 2 for r in torch_ref]))
    several = ShardSource(shards, decode="pil", progress=False)
    with pytest.raises(ValueError, match="input_key="):
        next(several.iter_batches(batch_size=2))


def test_a_shard_replaced_after_indexing_is_named_while_streaming(tmp_path, shards):
    import shutil

    paths = [str(tmp_path / f"s{k}.tar") for k in range(2)]
    for src_path, dst in zip(shards, paths, strict=True):
        shutil.copy(src_path, dst)
    src = ShardSource(paths, decode="l", input_key="png", progress=False)
    shutil.copy(shards[0], paths[1])  # same size, other keys
    with pytest.raises(CorruptShardError, match=r"s1\.tar.*sample000.*re-index"):
        list(src.iter_batches(batch_size=4))


def test_bad_decode_and_transform_arguments(shards):
    with pytest.raises(ValueError, match=r"unknown image spec\(s\) \['nonsense'\]"):
        ShardSource(shards, decode="nonsense", progress=False)
    for bad in (3, [], ["pil", 3]):
        with pytest.raises(TypeError, match="'decode' parameter of ShardSource"):
            ShardSource(shards, decode=bad, progress=False)
    with pytest.raises(TypeError, match="on its own"):
        ShardSource(shards, decode=[wds.autodecode.Decoder([])], progress=False)
    with pytest.raises(TypeError, match="'transform' parameter of ShardSource"):
        ShardSource(shards, transform="x", progress=False)

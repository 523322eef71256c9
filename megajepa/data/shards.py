"""Packed rows on disk: memory-mapped shards written once by tools/preprocess_data.py, read by training.

A shard directory holds `manifest.json` (tokenizer hash, packing signature, counts, shard list, the
dtype of each file), the tokenizer, and per shard `NAME.{field}.bin`: one [rows, seq_len] array per
per-token field of PackedRow, plus two per-row lists: the JEPA pair index `NAME.pairs.bin` [pairs, 2]
(row-local positions) with `NAME.pair_offsets.bin` int64 [rows + 1] (row i owns pairs[offsets[i]:offsets[i+1]]),
and the STP documents `NAME.docs.bin` [docs, 4] with `NAME.doc_offsets.bin` (data/stp.py samples from them).
Each field takes the smallest integer type its range allows (`field_dtypes`): 12 bytes per token for
a vocabulary up to 32768 and rows up to 32767 tokens, instead of 24 at int32.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from megajepa.data.collate import FIELDS, collate_arrays
from megajepa.data.examples import RecordError
from megajepa.data.packing import IGNORE, PackedRow
from megajepa.data.permutation import FeistelShuffle
from megajepa.data.stp import StpSampling, add_stp_samples

MANIFEST = "manifest.json"
FORMAT_VERSION = 3  # 2: per-field dtypes; 3: STP documents
DTYPE = np.int32  # in memory; on disk per field_dtypes
META = ("position_ids", "seg", "ctx_seg", "ctx_end", "pairs", "docs")  # values in [-1, seq_len]
LISTS = {"pairs": 2, "docs": 4}  # per-row lists: width of one entry (PackedRow.pairs, PackedRow.docs)


def field_dtypes(vocab_size: int | None = None, seq_len: int | None = None) -> dict[str, str]:
    """The on-disk integer type of each file (None: int32 everywhere)."""
    small_meta = seq_len is not None and seq_len <= np.iinfo(np.int16).max
    out = {f: "int16" if small_meta else "int32" for f in META}
    out["input_ids"] = "uint16" if vocab_size is not None and vocab_size <= 1 + np.iinfo(np.uint16).max else "int32"
    out["labels"] = "int16" if vocab_size is not None and vocab_size <= 1 + np.iinfo(np.int16).max else "int32"
    return out


def _cast(array: np.ndarray, dtype: str, what: str) -> np.ndarray:
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{what}: values in [{array.min()}, {array.max()}] do not fit {dtype}")
    return array.astype(dtype)


def _counts(name: str) -> str:
    return name[:-1] + "_counts"  # pairs -> pair_counts


def rows_to_arrays(rows: list[PackedRow]) -> dict[str, np.ndarray]:
    """Rows -> the on-disk arrays: each per-token field [n, seq_len]; each per-row list (LISTS) flat
    [P, width] with its per-row counts [n] (pairs/pair_counts, docs/doc_counts)."""
    arrays = {f: np.asarray([getattr(r, f) for r in rows], dtype=DTYPE) for f in FIELDS}
    for name, width in LISTS.items():
        arrays[name] = np.asarray([p for r in rows for p in getattr(r, name)], dtype=DTYPE).reshape(-1, width)
        arrays[_counts(name)] = np.asarray([len(getattr(r, name)) for r in rows], dtype=np.int64)
    return arrays


def _split(arrays: dict, n: int) -> tuple[dict, dict]:
    cut = {name: int(arrays[_counts(name)][:n].sum()) for name in LISTS}
    head = {f: a[:cut.get(f, n)] for f, a in arrays.items()}
    tail = {f: a[cut.get(f, n):] for f, a in arrays.items()}
    return head, tail


class ShardWriter:
    """Appends rows (or rows_to_arrays blocks) to `rows_per_shard`-row shards; `close()` returns the
    shard list for the manifest."""

    def __init__(self, out_dir: str, seq_len: int, rows_per_shard: int = 8192, dtypes: dict | None = None):
        self.out_dir, self.seq_len, self.rows_per_shard = out_dir, seq_len, rows_per_shard
        self.dtypes = dtypes or field_dtypes()
        self.shards: list[dict] = []
        self._parts: list[dict] = []
        self._rows = 0
        os.makedirs(out_dir, exist_ok=True)

    def add(self, row: PackedRow) -> None:
        self.add_arrays(rows_to_arrays([row]))

    def add_arrays(self, arrays: dict) -> None:
        self._parts.append(arrays)
        self._rows += len(arrays["pair_counts"])
        while self._rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, n: int) -> None:
        merged = {f: np.concatenate([p[f] for p in self._parts]) for f in self._parts[0]}
        block, rest = _split(merged, n)
        self._parts, self._rows = ([rest] if self._rows > n else []), self._rows - n
        name = f"shard_{len(self.shards):05d}"
        for f in (*FIELDS, *LISTS):
            _cast(block[f], self.dtypes[f], f"{name}.{f}").tofile(self._path(name, f))
        for f in LISTS:
            np.concatenate([[0], np.cumsum(block[_counts(f)])]).astype(np.int64).tofile(self._path(name, _offsets(f)))
        self.shards.append({"name": name, "rows": n, "pairs": int(block["pairs"].shape[0]),
                            "docs": int(block["docs"].shape[0]),
                            "tokens": int((block["seg"] >= 0).sum()),
                            "labelled_tokens": int((block["labels"] != IGNORE).sum())})

    def _path(self, name: str, field: str) -> str:
        return os.path.join(self.out_dir, f"{name}.{field}.bin")

    def close(self) -> list[dict]:
        if self._rows:
            self._flush(self._rows)
        return self.shards

    def discard(self) -> None:
        """Remove every shard file written: a refused corpus leaves no shard set behind."""
        for shard in self.shards:
            for f in (*FIELDS, *LISTS, *map(_offsets, LISTS)):
                if os.path.exists(self._path(shard["name"], f)):
                    os.remove(self._path(shard["name"], f))


def _offsets(name: str) -> str:
    return name[:-1] + "_offsets"  # pairs -> pair_offsets


def write_manifest(out_dir: str, manifest: dict) -> None:
    tmp = os.path.join(out_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **manifest}, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))  # the manifest appears last: no half-written set


def read_manifest(shard_dir: str) -> dict:
    path = os.path.join(shard_dir, MANIFEST)
    if not os.path.isfile(path):
        raise RecordError(f"{shard_dir}: no {MANIFEST}; write shards with tools/preprocess_data.py")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RecordError(f"{path}: shard format version {manifest.get('format_version')}, this code reads "
                          f"{FORMAT_VERSION}; re-run tools/preprocess_data.py")
    return manifest


def check_manifest(manifest: dict, shard_dir: str, tokenizer_sha256: str, packing: dict) -> None:
    """Refuse shards written with another tokenizer or packing config, naming every difference."""
    problems = []
    if manifest["tokenizer"]["sha256"] != tokenizer_sha256:
        problems.append(f"tokenizer sha256 {manifest['tokenizer']['sha256'][:12]}... vs this run's "
                        f"{tokenizer_sha256[:12]}...")
    written = manifest["packing"]
    for key in sorted(set(written) | set(packing)):
        if written.get(key) != packing.get(key):
            problems.append(f"{key}: shards {written.get(key)!r} vs this run {packing.get(key)!r}")
    if problems:
        raise RecordError(f"shards in {shard_dir} do not match this run (" + "; ".join(problems) +
                          "); re-run tools/preprocess_data.py with this run's config, or point data.shards "
                          "at matching shards")


class ShardRows:
    """Every row of a shard directory, memory-mapped; epoch e visits them in a permutation seeded by
    (seed, e). Implements the loader's row-source interface: num_rows(epoch), batch(epoch, start, n)."""

    def __init__(self, shard_dir: str, seed: int, stp: StpSampling | None = None):
        self.dir, self.seed, self.stp = shard_dir, seed, stp
        self.manifest = read_manifest(shard_dir)
        self.seq_len = self.manifest["packing"]["seq_len"]
        dtypes = self.manifest.get("dtypes") or field_dtypes()
        self.arrays, self.lists, sizes = [], [], []
        for shard in self.manifest["shards"]:
            rows, name = shard["rows"], shard["name"]
            self.arrays.append({f: self._map(name, f, (rows, self.seq_len), dtypes[f]) for f in FIELDS})
            self.lists.append({f: (self._map(name, f, (shard[f], width), dtypes[f]),
                                   self._map(name, _offsets(f), (rows + 1,), np.int64))
                               for f, width in LISTS.items()})
            sizes.append(rows)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.starts[-1])
        self._order: tuple[int, np.ndarray] | None = None

    def _map(self, name: str, field: str, shape: tuple, dtype) -> np.ndarray:
        path = os.path.join(self.dir, f"{name}.{field}.bin")
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        if size != expected:
            raise RecordError(f"{path}: {'missing' if size < 0 else f'{size} bytes'}, the manifest says "
                              f"{expected}; the shard set is incomplete or corrupt")
        if expected == 0:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def num_rows(self, epoch: int) -> int:
        return self.total

    def order(self, epoch: int) -> FeistelShuffle:
        """Epoch `epoch`'s shuffle, evaluated per slice: no per-row array, whatever the corpus size."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, FeistelShuffle(self.total, [self.seed, epoch]))
        return self._order[1]

    def _locate(self, index: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def row(self, index: int) -> PackedRow:
        """Row `index` in written order, as the packer made it."""
        s, i = self._locate(index)
        fields = {f: self.arrays[s][f][i].tolist() for f in FIELDS}
        lists = {f: [tuple(p) for p in self._list(f, s, i).tolist()] for f in LISTS}
        return PackedRow(**fields, **lists)

    def _list(self, name: str, shard: int, i: int) -> np.ndarray:
        """Row i of `shard`'s entries of a per-row list (LISTS)."""
        values, offsets = self.lists[shard][name]
        return values[offsets[i]:offsets[i + 1]]

    def batch(self, epoch: int, start: int, count: int) -> dict[str, torch.Tensor]:
        """collate over those rows, read straight from the memory maps (STP samples as PackedEpochs.batch)."""
        located = [self._locate(int(i)) for i in self.order(epoch)[start:start + count]]
        fields = {f: np.stack([self.arrays[s][f][i] for s, i in located]) for f in FIELDS}
        batch = collate_arrays(fields, [self._list("pairs", s, i) for s, i in located])
        if self.stp is not None:
            add_stp_samples(batch, [self._list("docs", s, i) for s, i in located], epoch, start, self.stp)
        return batch

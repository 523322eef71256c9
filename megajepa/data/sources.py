"""Data sources: files, folders and globs of JSON lines / JSON / parquet, read as a stream of
(source, record) pairs where `source` names the file and line (JSON lines) or row (JSON, parquet).

JSON lines are read here, line by line in binary, so one bad line (invalid UTF-8, bad JSON) is one
reported record, not a failed file. JSON and parquet go through `datasets.load_dataset` (streaming
for inputs larger than memory); their columns are unified across rows, so a null field counts as absent.
"""
from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
from dataclasses import dataclass

from megajepa.data.examples import RecordError
from megajepa.data.records import Malformed

FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".parquet": "parquet"}


@dataclass
class Source:
    path: str  # file, folder or glob
    weight: float = 1.0
    format: str | None = None  # jsonl | json | parquet; None: from each file's extension
    streaming: bool = False  # datasets' streaming mode (json/parquet); JSON lines always stream

    @classmethod
    def parse(cls, spec) -> "Source":
        return cls(spec) if isinstance(spec, str) else cls(**spec)

    def files(self) -> list[str]:
        if os.path.isdir(self.path):
            found = [os.path.join(root, name) for root, _, names in os.walk(self.path) for name in names]
        elif os.path.isfile(self.path):
            return [self.path]
        else:
            found = glob.glob(self.path, recursive=True)
        found = sorted(f for f in found if os.path.isfile(f) and (self.format or _format_of(f)))
        if not found:
            raise RecordError(f"data source {self.path!r} matches no {'/'.join(FORMATS)} file")
        return found

    def __iter__(self):
        for path in self.files():
            fmt = self.format or _format_of(path)
            if fmt is None:
                raise RecordError(f"{path}: unknown data format; name it with the source's 'format' "
                                  f"({'|'.join(sorted(set(FORMATS.values())))})")
            yield from (read_jsonl(path) if fmt == "jsonl" else read_with_datasets(path, fmt, self.streaming))


def _format_of(path: str) -> str | None:
    return next((fmt for ext, fmt in FORMATS.items() if path.endswith(ext)), None)


def read_jsonl(path: str):
    """(path:line, record or Malformed) for every non-blank line, constant memory."""
    try:
        f = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise RecordError(f"cannot read data source {path}: {e.strerror}") from None
    with f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            source = f"{path}:{line_no}"
            raw = raw.rstrip(b"\r\n")  # JSON error columns count within the line itself
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):  # an editor's byte-order mark is not data
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield source, Malformed(f"invalid UTF-8 (byte {e.start})")
                continue
            try:
                yield source, json.loads(text)
            except json.JSONDecodeError as e:
                yield source, Malformed(f"bad JSON ({e.msg}, column {e.colno})")


def read_with_datasets(path: str, fmt: str, streaming: bool):
    """(path:row N, record) through `datasets`; a file it cannot load at all stops the run up front."""
    import datasets

    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset(fmt, data_files=[path], split="train", streaming=streaming)
        for i, row in enumerate(rows, 1):
            yield f"{path}:row {i}", {k: v for k, v in row.items() if v is not None}
    except (ValueError, OSError, TypeError, datasets.exceptions.DatasetGenerationError) as e:
        cause = e.__cause__ or e
        raise RecordError(f"{path}: datasets cannot load this {fmt} file ({type(cause).__name__}: "
                          f"{str(cause)[:300]}); JSON lines are validated line by line instead") from None

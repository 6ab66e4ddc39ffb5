"""prism_kernels.data readers on real GSM8K rows: JSONL, JSONL.gz, JSON array, Parquet, CSV and HF
save_to_disk copies written by independent writers (json, pyarrow, datasets) read back identically;
seeking equals slicing a full read; malformed input reported with file and line; bounded memory."""

import gzip
import json
import os
import subprocess
import sys
import textwrap

import pytest

from prism_kernels.data import DataError, Dataset, Record, open_dataset
from prism_kernels.data import readers as readers_mod

from tiny_models import GSM8K_TEST, GSM8K_TRAIN, SHARED_DATA, gsm8k_records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pacsv = pytest.importorskip("pyarrow.csv")
datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN} "
                                                                  "(set PRISM_SHARED_DATA)")
N = 300


def _all(ds: Dataset, **kw) -> list[Record]:
    return [r for batch in ds.iter_records(**kw) for r in batch]


@pytest.fixture(scope="module")
def rows():
    return gsm8k_records(N)


@pytest.fixture(scope="module")
def copies(rows, tmp_path_factory):
    """The same rows as JSONL, JSONL.gz, JSON array, Parquet (row groups of 64), CSV and an HF folder."""
    d = tmp_path_factory.mktemp("gsm8k_copies")
    lines = [json.dumps(r) for r in rows]
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    (d / "a.json").write_text(json.dumps(rows, indent=2))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, d / "a.parquet", row_group_size=64)
    pacsv.write_csv(table, d / "a.csv")
    datasets.Dataset.from_list(rows).save_to_disk(str(d / "hf"))
    return {"jsonl": str(d / "a.jsonl"), "jsonl.gz": str(d / "a.jsonl.gz"), "json": str(d / "a.json"),
            "parquet": str(d / "a.parquet"), "csv": str(d / "a.csv"), "hf": str(d / "hf")}


def _csv_lines(rows):
    # pyarrow writes a header line, then each record over 1 + (newlines inside its values) lines.
    out, line = [], 2
    for r in rows:
        out.append(line)
        line += 1 + sum(v.count("\n") for v in r.values())
    return out


def _json_array_lines(path):
    # json.dumps(indent=2) starts each element on a line that is exactly "  {".
    with open(path) as f:
        return [i for i, text in enumerate(f, 1) if text.rstrip("\n") == "  {"]


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "json", "parquet", "csv", "hf"])
def test_every_format_reads_the_same_rows(copies, rows, kind):
    ds = open_dataset([copies[kind]])
    got = _all(ds, batch_rows=50)
    assert [r.data for r in got] == rows
    assert [r.row_id for r in got] == list(range(N))
    assert all(r.error is None and r.source == copies[kind] for r in got)
    expected_lines = {"jsonl": list(range(1, N + 1)), "jsonl.gz": list(range(1, N + 1)),
                      "json": _json_array_lines(copies["json"]), "csv": _csv_lines(rows),
                      "parquet": list(range(N)), "hf": list(range(N))}[kind]
    assert [r.line for r in got] == expected_lines
    assert ds.count() == N
    assert ds.columns() == ["question", "answer"]
    assert ds.sources[0].kind == {"jsonl.gz": "jsonl"}.get(kind, kind)


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "parquet", "csv", "hf"])
@pytest.mark.parametrize("start,stop,batch", [(0, None, 7), (1, 2, 1), (63, 130, 16), (64, 65, 3), (255, 300, 10),
                                              (257, None, 1024), (299, None, 5), (300, None, 4), (120, 120, 4),
                                              (200, 1000, 64)])
def test_seek_equals_slicing_a_full_read(copies, kind, start, stop, batch):
    full = _all(open_dataset([copies[kind]]))
    for fresh in (True, False):  # without and with the seek index of a previous full pass
        ds = open_dataset([copies[kind]])
        if not fresh:
            ds.index()
        batches = list(ds.iter_records(start=start, stop=stop, batch_rows=batch))
        assert [r for b in batches for r in b] == full[start:stop]
        assert all(len(b) == batch for b in batches[:-1]) and all(0 < len(b) <= batch for b in batches)


def test_seek_parses_only_the_rows_it_returns(copies, monkeypatch):
    ds = open_dataset([copies["jsonl"]])
    assert ds.index() == [N]
    parsed = []
    real = readers_mod._JsonlSource._parse
    monkeypatch.setattr(readers_mod._JsonlSource, "_parse", staticmethod(lambda raw: parsed.append(raw) or real(raw)))
    got = _all(ds, start=270, stop=280)
    assert [r.row_id for r in got] == list(range(270, 280))
    assert len(parsed) == 10


def test_several_inputs_are_one_dataset_with_global_row_ids(copies, rows):
    paths = [copies["parquet"], copies["jsonl"], copies["csv"]]
    ds = open_dataset(paths)
    got = _all(ds, batch_rows=128)
    assert [r.row_id for r in got] == list(range(3 * N))
    assert [r.data for r in got] == rows * 3
    assert [r.source for r in got] == [p for p in paths for _ in range(N)]
    assert ds.count() == 3 * N and ds.index() == [N, N, N]
    for start, stop in [(N - 5, N + 5), (N, 2 * N), (2 * N + 10, None), (5, 3 * N - 5), (N + 1, N + 2)]:
        assert _all(open_dataset(paths), start=start, stop=stop, batch_rows=32) == got[start:stop]


def test_glob_patterns_expand_in_sorted_order(tmp_path, rows):
    (tmp_path / "parts" / "sub").mkdir(parents=True)
    for i, name in enumerate(["b.jsonl", "a.jsonl", "sub/c.jsonl"]):
        (tmp_path / "parts" / name).write_text(json.dumps(rows[i]) + "\n")
    ds = open_dataset([str(tmp_path / "parts" / "**" / "*.jsonl")])
    assert [s.path for s in ds.sources] == [str(tmp_path / "parts" / n) for n in ("a.jsonl", "b.jsonl", "sub/c.jsonl")]
    assert [r.data for r in _all(ds)] == [rows[1], rows[0], rows[2]]
    with pytest.raises(DataError, match="no file matches .*nothing"):
        open_dataset([str(tmp_path / "nothing*.jsonl")])


def test_identity_changes_with_the_file(tmp_path, rows):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(rows[0]) + "\n")
    a = open_dataset([str(p)]).identity()
    assert open_dataset([str(p)]).identity() == a
    p.write_text(json.dumps(rows[1]) + "\n")
    assert open_dataset([str(p)]).identity() != a
    assert open_dataset([str(p), str(p)]).identity() != open_dataset([str(p)]).identity()


def test_malformed_jsonl_lines_are_records_with_file_and_line(tmp_path, rows):
    p = tmp_path / "bad.jsonl"
    text = "\n".join([json.dumps(rows[0]), '{"question": "x", ', "", "   ", "[1, 2]", json.dumps(rows[1]),
                      '{"question": 1} trailing', "oops"]) + "\n"
    p.write_text(text)
    got = _all(open_dataset([str(p)]))
    assert [(r.row_id, r.line) for r in got] == [(0, 1), (1, 2), (2, 5), (3, 6), (4, 7), (5, 8)]
    assert got[0].data == rows[0] and got[3].data == rows[1]
    assert got[1].data is None and got[1].error.startswith("invalid JSON: ") and "column" in got[1].error
    assert got[2].error == "not a JSON object (a JSON array)"
    assert got[4].error.startswith("invalid JSON: Extra data")
    assert got[5].error is not None and got[5].data is None
    # Invalid UTF-8 is one bad record too.
    q = tmp_path / "bytes.jsonl"
    q.write_bytes(b'{"a": "\xff"}\n{"a": "b"}\n')
    got = _all(open_dataset([str(q)]))
    assert got[0].error.startswith("invalid UTF-8") and got[1].data == {"a": "b"}


def test_bom_and_crlf_jsonl(tmp_path, rows):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in rows[:3]).encode() + b"\r\n")
    assert [r.data for r in _all(open_dataset([str(p)]))] == rows[:3]


def test_bad_csv_rows_are_records_with_their_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('question,answer\nq1,a1\n"multi\nline q",a2\n\nonly-one-field\nq4,a4,extra\nq5,"a5"\n')
    got = _all(open_dataset([str(p)]))
    assert [(r.row_id, r.line) for r in got] == [(0, 2), (1, 3), (2, 6), (3, 7), (4, 8)]
    assert got[1].data == {"question": "multi\nline q", "answer": "a2"}
    assert got[2].data is None and got[2].error == "expected 2 fields (as the header), got 1"
    assert got[3].error == "expected 2 fields (as the header), got 3"
    assert got[4].data == {"question": "q5", "answer": "a5"}


def test_crlf_and_gzipped_csv(tmp_path, rows):
    import csv

    with open(tmp_path / "crlf.csv", "w", newline="") as f:  # the csv module writes \r\n line ends
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(rows[:30])
    with open(tmp_path / "crlf.csv", "rb") as f, gzip.open(tmp_path / "crlf.csv.gz", "wb") as g:
        g.write(f.read())
    expected_lines = _csv_lines(rows[:30])
    for name in ("crlf.csv", "crlf.csv.gz"):
        got = _all(open_dataset([str(tmp_path / name)]), batch_rows=7)
        assert [r.data for r in got] == rows[:30] and [r.line for r in got] == expected_lines
        assert _all(open_dataset([str(tmp_path / name)]), start=17, stop=29) == got[17:29]


def test_tsv_and_values_stay_text(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("prompt\tresponse\n007\t1.50\n")
    assert _all(open_dataset([str(p)]))[0].data == {"prompt": "007", "response": "1.50"}


def test_svamp_json_array_with_numbers():
    path = SHARED_DATA / "svamp" / "SVAMP.json"
    if not path.exists():
        pytest.skip(f"SVAMP not found at {path}")
    with open(path) as f:
        expected = json.load(f)
        f.seek(0)
        starts = [i for i, line in enumerate(f, 1) if line.rstrip("\n") == "    {"]
    ds = open_dataset([str(path)])
    got = _all(ds, batch_rows=333)
    assert [r.data for r in got] == expected and [r.line for r in got] == starts
    assert ds.sources[0].kind == "json" and "Answer" in ds.columns()


def test_hf_dataset_dict_folder_needs_a_split(tmp_path, rows):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:10]),
                               "test": datasets.Dataset.from_list(rows[10:15])})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="has splits train, test; pass --split"):
        open_dataset([str(tmp_path / "dd")])
    with pytest.raises(DataError, match="no split 'dev'; splits: train, test"):
        open_dataset([str(tmp_path / "dd")], split="dev")
    assert [r.data for r in _all(open_dataset([str(tmp_path / "dd")], split="test"))] == rows[10:15]


def test_user_mistakes_are_one_line_data_errors(tmp_path):
    cases = []
    with pytest.raises(DataError, match="data file not found: .*nope.jsonl") as e:
        open_dataset([str(tmp_path / "nope.jsonl")])
    cases.append(e)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x.txt: unknown data format") as e:
        open_dataset([str(tmp_path / "x.txt")])
    cases.append(e)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="folder: not a folder written by datasets.save_to_disk") as e:
        open_dataset([str(tmp_path / "folder")])
    cases.append(e)
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="fake.parquet: not a readable Parquet file") as e:
        open_dataset([str(tmp_path / "fake.parquet")])
    cases.append(e)
    with pytest.raises(DataError, match="no data given") as e:
        open_dataset([])
    cases.append(e)
    with pytest.raises(DataError, match="unknown data format 'xml'") as e:
        open_dataset([str(tmp_path / "x.txt")], fmt="xml")
    cases.append(e)
    (tmp_path / "broken.json").write_text('[{"a": 1},\n {"a": 2}\n {"a": 3}]')
    with pytest.raises(DataError, match=r"broken.json:3: invalid JSON array") as e:
        open_dataset([str(tmp_path / "broken.json")]).count()
    cases.append(e)
    if os.geteuid() != 0:
        (tmp_path / "locked.jsonl").write_text("{}\n")
        os.chmod(tmp_path / "locked.jsonl", 0)
        with pytest.raises(DataError, match="cannot read .*locked.jsonl") as e:
            open_dataset([str(tmp_path / "locked.jsonl")])
        cases.append(e)
    for e in cases:
        assert "\n" not in str(e.value)


def test_hub_id_missing_from_the_local_cache_says_what_to_pass():
    with pytest.raises(DataError, match="not a dataset in the local Hugging Face cache.*save_to_disk") as e:
        open_dataset(["prism-no-such-org/no-such-dataset"], split="train")
    assert "\n" not in str(e.value)


def test_bad_arguments(copies):
    ds = open_dataset([copies["jsonl"]])
    for kw in ({"start": -1}, {"stop": -2}, {"batch_rows": 0}, {"start": 1.5}):
        with pytest.raises(DataError):
            next(ds.iter_records(**kw))


def test_dataset_pickles_with_its_index(copies):
    import pickle

    ds = open_dataset([copies["jsonl"], copies["parquet"]])
    ds.index()
    back = pickle.loads(pickle.dumps(ds))
    assert _all(back, start=290, stop=310) == _all(ds, start=290, stop=310)


def test_other_gsm8k_split_counts():
    if not GSM8K_TEST.exists():
        pytest.skip("GSM8K test split absent")
    with open(GSM8K_TEST) as f:
        n = sum(1 for line in f if line.strip())
    assert open_dataset([str(GSM8K_TEST)]).count() == n


_MEMORY_CHILD = textwrap.dedent("""
    import resource, sys
    from prism_kernels.data import open_dataset, detect_fields
    detect_fields(["question", "answer"])
    # `import prism_kernels.data` stays light: the heavy dependencies load only when used.
    print("heavy", [m for m in ("pyarrow", "datasets", "transformers", "tokenizers", "jinja2") if m in sys.modules])
    import pyarrow.parquet  # imported before the baseline
    for path in sys.argv[1:]:
        ds = open_dataset([path])
        next(ds.iter_records(batch_rows=256))  # warm-up: the readers' library code pages count in RSS too
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = 0
        for batch in ds.iter_records(batch_rows=256):
            n += len(batch)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(path, n, grown, flush=True)
""")


def test_streaming_keeps_memory_bounded_and_imports_light(tmp_path, rows):
    """In a fresh interpreter: `import prism_kernels.data` loads no pyarrow/datasets/transformers; then
    40k rows (~50 MB as Python dicts and Records) read with 256-row batches: peak RSS grows by far less."""
    n_rows, chunk = 40_000, 2_000
    jsonl, parquet = tmp_path / "big.jsonl", tmp_path / "big.parquet"
    block = [rows[i % N] for i in range(chunk)]
    with open(jsonl, "w") as f:
        text = "".join(json.dumps(r) + "\n" for r in block)
        for _ in range(n_rows // chunk):
            f.write(text)
    table = pa.Table.from_pylist(block)
    with pq.ParquetWriter(parquet, table.schema) as w:
        for _ in range(n_rows // chunk):
            w.write_table(table, row_group_size=chunk)
    data_mb = os.path.getsize(jsonl) / 2**20
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(readers_mod.__file__).rsplit("/prism_kernels/", 1)[0],
                                                         os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(jsonl), str(parquet)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    heavy, *lines = out.stdout.splitlines()
    assert heavy == "heavy []"
    for line in lines:
        path, n, grown_kb = line.split()
        assert int(n) == n_rows
        assert int(grown_kb) / 1024 < min(15.0, data_mb / 2), (path, grown_kb, data_mb)


def test_hub_id_read_from_the_local_cache(tmp_path, rows, monkeypatch):
    """A hub dataset as `datasets` caches it (<org>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow),
    laid out here from a packaged-builder run, is found offline by its id."""
    import glob
    import shutil

    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    cache = tmp_path / "cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    datasets.load_dataset("json", data_files={"train": str(src)}, cache_dir=str(cache))
    built = next(p for p in glob.glob(str(cache / "json" / "*" / "0.0.0" / "*")) if os.path.isdir(p))
    dst = cache / "prism-test___tiny-gsm" / "default" / "0.0.0" / "0123abcd"
    shutil.copytree(built, dst)
    os.rename(dst / "json-train.arrow", dst / "tiny-gsm-train.arrow")
    for split in ("train", None):  # one split: no --split needed
        ds = open_dataset(["prism-test/tiny-gsm"], split=split)
        assert ds.sources[0].kind == "hf" and ds.sources[0].path == "prism-test/tiny-gsm"
        assert [r.data for r in _all(ds)] == rows[:20]
    with pytest.raises(DataError, match="prism-test/tiny-gsm has no split 'validation'; splits: train"):
        open_dataset(["prism-test/tiny-gsm"], split="validation")


def test_json_extension_holding_jsonl_and_duplicate_csv_header(tmp_path, rows):
    p = tmp_path / "lines.json"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    ds = open_dataset([str(p)])
    assert ds.sources[0].kind == "jsonl" and [r.data for r in _all(ds)] == rows[:4]
    q = tmp_path / "dup.csv"
    q.write_text("question,question\na,b\n")
    with pytest.raises(DataError, match="dup.csv: the CSV header names column 'question' twice"):
        open_dataset([str(q)])


def test_seek_across_index_checkpoints_with_blank_and_bad_lines(tmp_path, rows):
    """700 records with blank lines and malformed records sprinkled in: seeking anywhere (also from a
    partly built index) equals the full read, and line numbers match the file's own lines."""
    import csv
    import random

    rng = random.Random(0)
    jl, expected_jl = [], []
    cv, expected_cv = [], []
    for i in range(700):
        while rng.random() < 0.2:
            jl.append("")
            cv.append("")
        bad = rng.random() < 0.05
        jl.append('{"question": ' if bad else json.dumps(rows[i % N]))
        expected_jl.append((len(jl), None if bad else rows[i % N]))
        cv.append(f"{i},x,extra" if bad else f"{i},q{i}")
        expected_cv.append((len(cv) + 1, None if bad else {"id": str(i), "text": f"q{i}"}))
    (tmp_path / "s.jsonl").write_text("\n".join(jl) + "\n")
    (tmp_path / "s.csv").write_text("id,text\n" + "\n".join(cv) + "\n")
    for name, expected in (("s.jsonl", expected_jl), ("s.csv", expected_cv)):
        full = _all(open_dataset([str(tmp_path / name)]))
        assert [(r.line, r.data) for r in full] == expected
        ds = open_dataset([str(tmp_path / name)])
        _all(ds, stop=300)  # the index now covers the first 300 records only
        for start in (0, 255, 256, 257, 299, 300, 511, 512, 513, 600, 699, 700):
            assert _all(ds, start=start, stop=start + 40, batch_rows=9) == full[start:start + 40]
        assert ds.count() == 700

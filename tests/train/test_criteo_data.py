"""Criteo format: the TSV reader on a file written in exactly Criteo's layout, the synthetic
generator (seeded, skewed, its Bayes AUC), vocabularies and the streaming preparation."""
import numpy as np
import pytest

from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.schema import MISSING_ID, dense_transform, hex_ids
from recdeploy.train.criteo.synthetic import SyntheticCriteo, expected_auc
from recdeploy.train.criteo.tsv import CriteoFormatError, RawChunk, read_tsv_chunks, write_tsv
from recdeploy.train.criteo.vocabulary import build_vocabulary
from recdeploy.train.data import load_dataset
from recdeploy.train.tasks.ctr import auc

# two rows as they appear in Criteo's train.txt: tabs, empty = missing, lower-case hex
LINES = [
    "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t25c83c98"
    "\t7e0ccccf\tde7995b8\t1f89b562\ta73ee510\ta8cd5504\tb2cb9c98\t37c9c164\t2824a5f6\t1adce6ef"
    "\t8ba8b39a\t891b62e7\te5ba7672\tf54016b9\t21ddcdc9\tb1252a9d\t07b5194c\t\t3a171ecb\tc5c50484"
    "\te8b83407\t9727dd16",
    "1\t\t-1\t\t\t\t\t\t\t\t\t\t\t\t05db9164\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t",
]


@pytest.fixture()
def tsv(tmp_path):
    path = tmp_path / "day_0"
    path.write_text("\n".join(LINES) + "\n")
    return path


class TestTsv:
    def test_reads_criteo_layout(self, tsv):
        (chunk,) = list(read_tsv_chunks([tsv]))
        assert chunk.labels.tolist() == [0.0, 1.0]
        assert chunk.dense[0, :4].tolist() == [1, 1, 5, 0] and np.isnan(chunk.dense[0, 11])
        assert chunk.dense[1, 1] == -1 and np.isnan(chunk.dense[1, 0])
        assert chunk.ids[0, 0] == 0x68FD1E64 and chunk.ids[0, 21] == MISSING_ID
        assert chunk.ids[1, 0] == 0x05DB9164 and (chunk.ids[1, 1:] == MISSING_ID).all()

    def test_chunks_stream(self, tsv):
        assert [len(c) for c in read_tsv_chunks([tsv, tsv, tsv], chunk_rows=4)] == [2, 2, 2]

    def test_round_trip(self, tmp_path):
        chunk = SyntheticCriteo(rows=300, scale=0.001, chunk_rows=300).chunk(0)
        (back,) = list(read_tsv_chunks([write_tsv(tmp_path / "x.tsv", [chunk])]))
        assert np.array_equal(back.ids, chunk.ids) and np.array_equal(back.labels, chunk.labels)
        assert np.array_equal(np.isnan(back.dense), np.isnan(chunk.dense))

    @pytest.mark.parametrize("line, match", [("1\t2\t3", "3 tab-separated fields"),
                                             (LINES[0].replace("68fd1e64", "68fd1e6z"), "not 8 hex"),
                                             ("2" + LINES[0][1:], "label")])
    def test_errors_name_the_line(self, tmp_path, line, match):
        path = tmp_path / "bad.tsv"
        path.write_text(LINES[1] + "\n" + line + "\n")
        with pytest.raises(CriteoFormatError, match=match):
            list(read_tsv_chunks([path]))

    def test_transforms(self):
        assert hex_ids(np.array([b"ff", b"", b"0000000a"])).tolist() == [255, MISSING_ID, 10]
        out = dense_transform(np.array([[np.nan, -3.0, 0.0, np.e - 1]]))
        np.testing.assert_allclose(out, [[0, 0, 0, 1]], atol=1e-6)


class TestSynthetic:
    def test_seeded_and_skewed(self):
        data = SyntheticCriteo(rows=20_000, scale=0.01, chunk_rows=20_000)
        a, b = data.chunk(0), SyntheticCriteo(rows=20_000, scale=0.01, chunk_rows=20_000).chunk(0)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
        column = a.ids[:, 2][a.ids[:, 2] != MISSING_ID]
        _, counts = np.unique(column, return_counts=True)
        assert counts.max() > 50 * np.median(counts)          # a hot head and a long tail
        assert 0.1 < a.labels.mean() < 0.35

    def test_bayes_auc_is_the_truths_auc(self):
        data = SyntheticCriteo(rows=60_000, scale=0.01, chunk_rows=60_000)
        chunk = data.chunk(0)
        p = data.click_probability(chunk)
        assert abs(expected_auc(p) - auc(chunk.labels, p)) < 0.01
        assert 0.75 < expected_auc(p) < 0.9

    def test_expected_auc_of_known_cases(self):
        assert expected_auc(np.array([0.0, 1.0])) == pytest.approx(1.0)


class TestVocabulary:
    def chunk(self, column):
        ids = np.full((len(column), 26), MISSING_ID, dtype=np.int64)
        ids[:, 0] = column
        return RawChunk(np.zeros(len(column), np.float32), np.zeros((len(column), 13)), ids)

    def test_rows_by_frequency_with_threshold(self):
        vocab = build_vocabulary([self.chunk([7, 7, 7, 9, 9, 11])], min_count=2)
        assert vocab.rows_per_field[0] == 4                     # missing, OOV, 7, 9
        rows = vocab.lookup(self.chunk([7, 9, 11, MISSING_ID]).ids)[:, 0]
        assert rows.tolist() == [2, 3, 1, 0]

    def test_capped_field_hashes_the_rest(self):
        vocab = build_vocabulary([self.chunk([1, 1, 2, 3, 4, 5])], max_vocab=1, hash_rows=8)
        rows = vocab.lookup(self.chunk([1, 2, 3, 4, 5]).ids)[:, 0]
        assert rows[0] == 2 and ((rows[1:] >= 3) & (rows[1:] < 11)).all()
        assert vocab.rows_per_field[0] == 11

    def test_raw_ids_invert_lookup(self):
        vocab = build_vocabulary([self.chunk([5, 5, 8, 13])])
        rows = vocab.lookup(self.chunk([5, 8, 13, MISSING_ID]).ids)
        assert np.array_equal(vocab.lookup(vocab.raw_ids(rows)), rows)


def test_prepare_streams_into_memmaps(tmp_path):
    source = SyntheticSource(SyntheticCriteo(rows=8_000, scale=0.002, chunk_rows=3_000))
    data = prepare(source, tmp_path / "p", holdout=0.2, progress=False)
    labels, dense, sparse = data.arrays("train")
    assert (len(labels), dense.shape, sparse.shape) == (6_400, (6_400, 13), (6_400, 26))
    assert len(data.arrays("valid")[0]) == 800 and len(data.arrays("test")[0]) == 800
    assert (np.asarray(sparse).max(axis=0) < np.array(data.rows_per_field)).all()
    counts = data.row_counts()
    assert counts.sum() == 6_400 * 26 and len(counts) == data.n_items
    assert 0.7 < data.meta["bayes_auc"]["test"] < 0.95
    again = prepare(source, tmp_path / "p", holdout=0.2, progress=False)
    assert again.fingerprint() == data.fingerprint()


def test_dataset_reads_a_users_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RECDEPLOY_CACHE", str(tmp_path / "cache"))
    chunk = SyntheticCriteo(rows=2_000, scale=0.001, chunk_rows=2_000).chunk(0)
    write_tsv(tmp_path / "data" / "day_0", [chunk])
    data = load_dataset("criteo", path=tmp_path / "data", progress=False)
    assert data.meta["bounds"][-1] == 2_000 and "criteo (tsv)" in data.summary()
    labels = np.concatenate([np.asarray(data.arrays(p)[0]) for p in ("train", "valid", "test")])
    assert np.array_equal(labels, chunk.labels)

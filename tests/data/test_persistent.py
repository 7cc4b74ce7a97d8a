"""file_stat_hashing: the PersistentDataset key changes with the image file, not only with the data dict."""

import os

from monai.data.utils import pickle_hashing

from fairmonai.data.persistent import file_stat_hashing


def test_key_follows_the_file(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"12345")
    item = {"image": str(f), "label": 1}
    key = file_stat_hashing(item)
    assert key == file_stat_hashing(dict(item)) and key != pickle_hashing(item)
    os.utime(f, ns=(0, 10**9))  # touched
    touched = file_stat_hashing(item)
    assert touched != key
    f.write_bytes(b"123456")  # replaced, another size
    os.utime(f, ns=(0, 10**9))
    assert file_stat_hashing(item) != touched
    assert file_stat_hashing({**item, "label": 0}) != file_stat_hashing(item)


def test_missing_file_hashes_the_dict_only(tmp_path):
    item = {"image": str(tmp_path / "none.png")}
    assert file_stat_hashing(item) == file_stat_hashing(dict(item))
    assert file_stat_hashing({"label": 1}, keys=("image",)) == pickle_hashing({"label": 1, "__file_stats__": {}})

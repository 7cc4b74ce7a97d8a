import pytest

from fairmonai.checkpoints import latest_checkpoint


def test_latest_is_largest_epoch(tmp_path):
    for name in ("checkpoint_checkpoint_epoch=2.pt", "checkpoint_checkpoint_epoch=10.pt", "model.pt", "checkpoint_x.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_checkpoint_epoch=10.pt")


def test_none_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 'checkpoint\*epoch=N.pt' in"):
        latest_checkpoint(tmp_path / "models")

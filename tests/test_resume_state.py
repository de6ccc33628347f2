"""compressor.resume: stage state files, and what a stage does with one that is not its own."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from compress_base.errors import CompressError
from compressor.data import make_loader
from compressor.resume import restoring, save_state
from compressor.train import train


def test_state_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {"epoch": 3, "history": [{"loss": 0.5, "note": None}], "w": torch.arange(4.0), "rng": torch.get_rng_state()}
    save_state(tmp_path / "s.pt", state)
    with restoring(tmp_path / "s.pt", "the test stage") as back:
        assert back["epoch"] == 3 and back["history"] == state["history"]
        assert torch.equal(back["w"], state["w"]) and torch.equal(back["rng"], state["rng"])
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left


def test_damaged_file_is_one_clear_error(tmp_path):
    path = tmp_path / "s.pt"
    path.write_bytes(b"not a state file")
    with pytest.raises(CompressError, match=r"cannot resume the test stage from .*s\.pt .*delete it"), \
            restoring(path, "the test stage"):
        pass


def test_state_that_does_not_fit_is_one_clear_error(tmp_path):
    save_state(tmp_path / "s.pt", {"model": nn.Linear(3, 2).state_dict()})
    with pytest.raises(CompressError, match="another run or is damaged"), \
            restoring(tmp_path / "s.pt", "the test stage") as state:
        nn.Linear(5, 2).load_state_dict(state["model"])  # another model's weights


def test_file_with_code_in_it_is_refused(tmp_path):
    torch.save({"model": nn.Linear(3, 2)}, tmp_path / "s.pt")  # a pickled module, not weights
    with pytest.raises(CompressError, match="cannot resume"), restoring(tmp_path / "s.pt", "the test stage"):
        pass


def test_training_resumed_from_another_models_checkpoint_is_refused(tmp_path):
    data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
    loader = make_loader(data, 8, shuffle=True, seed=0)
    train(nn.Linear(3, 2), loader, 1, checkpoint=tmp_path / "t.pt")
    with pytest.raises(CompressError, match="cannot resume the fine-tune stage"):
        train(nn.Linear(3, 4), loader, 2, checkpoint=tmp_path / "t.pt", desc="fine-tune")

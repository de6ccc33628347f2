"""Tests of compressor.train and compressor.runtime: the distillation loss, training, evaluation,
mixed precision, memory format, device choice and the CPU thread policy."""
import logging
import math
import os
import subprocess
import sys
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress_base.errors import CompressError
from compressor.data import load_data, make_loader
from compressor.runtime import Runtime, apply_threads, default_threads, pick_device
from compressor.train import evaluate, kd_loss, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny convolutions run faster and steadier on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cnn(seed=0, width=16):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * 16, 10),
    )


@pytest.fixture(scope="module")
def digits():
    return load_data(resolution=16, seed=0)


@pytest.fixture(scope="module")
def loaders(digits):
    return make_loader(digits.train, 32, True, 0), make_loader(digits.val, 256, False, 0)


@pytest.fixture(scope="module")
def trained(digits, loaders):
    model = tiny_cnn(seed=0)
    fresh = make_loader(digits.train, 32, True, 0)  # batch order independent of other tests
    history = train(model, fresh, epochs=3, lr=0.02, val_loader=loaders[1])
    return model, history


def test_kd_loss_matches_hand_computation():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    # At T=2 the student's softmax is (a, 1-a) and the teacher's (1-a, a), a = sigmoid(0.5),
    # so KL(teacher || student) = (2a - 1) * log(a / (1-a)) = (2a - 1) * 0.5.
    a = 1 / (1 + math.exp(-0.5))
    ce = math.log(1 + math.exp(-1))
    expected = 0.5 * ce + 0.5 * 4 * (2 * a - 1) * 0.5
    assert kd_loss(s, t, y, lam=0.5, T=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_with_lam_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, lam=0.0), F.cross_entropy(s, y))


def test_kd_loss_zero_kl_when_student_equals_teacher_and_no_teacher_grad():
    s = torch.randn(4, 3, requires_grad=True)
    t = s.detach().clone().requires_grad_()
    y = torch.tensor([0, 1, 2, 0])
    assert kd_loss(s, t, y, lam=1.0).item() == pytest.approx(0.0, abs=1e-6)
    kd_loss(s, t, y).backward()
    assert t.grad is None and s.grad is not None


def test_train_reaches_good_accuracy(trained, loaders):
    model, history = trained
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "train_acc", "val_acc", "lr", "seconds"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_acc"] > 0.8
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine schedule ends at zero
    assert evaluate(model, loaders[1]) == pytest.approx(history[-1]["val_acc"])
    assert model.training  # train() and evaluate() restore the mode they found


def _kl_to_teacher(student, teacher, loader, T=4.0):
    student.eval()
    with torch.no_grad():
        return sum(
            F.kl_div(F.log_softmax(student(x) / T, 1), F.log_softmax(teacher(x) / T, 1),
                     reduction="sum", log_target=True).item()
            for x, _ in loader
        ) / len(loader.dataset)


def test_distillation_moves_student_toward_teacher(trained, loaders):
    teacher = trained[0]
    teacher.train()
    student = tiny_cnn(seed=1, width=8)
    before = _kl_to_teacher(student, teacher, loaders[1])
    train(student, loaders[0], epochs=2, teacher=teacher, kd_lambda=1.0)
    assert not teacher.training  # the teacher runs in eval mode
    assert _kl_to_teacher(student, teacher, loaders[1]) < 0.3 * before


def test_train_accepts_models_with_auxiliary_outputs(loaders):
    Outputs = namedtuple("Outputs", "logits aux_logits")

    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_cnn(seed=2, width=4)

        def forward(self, x):
            out = self.body(x)
            return Outputs(out, out.detach()) if self.training else out

    history = train(WithAux(), loaders[0], epochs=1)
    assert math.isfinite(history[0]["loss"]) and "val_acc" not in history[0]


def test_quiet_training_logs_one_line_per_epoch(loaders, caplog):
    with caplog.at_level(logging.INFO, logger="compressor.train"):
        train(tiny_cnn(width=4), loaders[0], epochs=2, desc="finetune")
    lines = [r.getMessage() for r in caplog.records if r.name == "compressor.train"]
    assert len(lines) == 2 and lines[0].startswith("finetune epoch 1/2")


def test_zero_epochs_leaves_model_untouched(loaders):
    model = tiny_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert train(model, loaders[0], epochs=0) == []
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_divergence_is_reported(loaders):
    with pytest.raises(CompressError, match="diverged"):
        train(tiny_cnn(width=4), loaders[0], epochs=1, lr=1e30)


@pytest.mark.parametrize("kwargs", [
    {"epochs": -1}, {"lr": 0.0}, {"kd_lambda": 1.5}, {"temperature": 0.0},
])
def test_bad_training_arguments(loaders, kwargs):
    args = {"epochs": 1, **kwargs}
    with pytest.raises(CompressError):
        train(tiny_cnn(width=4), loaders[0], **args)


def test_evaluate_empty_loader_is_a_user_error():
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0).long())
    with pytest.raises(CompressError):
        evaluate(tiny_cnn(), make_loader(empty, 8, False, 0))


def test_pick_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(CompressError):
        pick_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(CompressError, match="not available"):
            pick_device("cuda")


def test_reinitialize_gives_fresh_weights_and_batchnorm_stats():
    from compressor.train import reinitialize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
        net[1].running_mean.fill_(3.0)
    reinitialize(net)
    assert not torch.any(net[0].weight == 7.0)
    assert torch.all(net[1].weight == 1.0) and torch.all(net[1].bias == 0.0)
    assert torch.all(net[1].running_mean == 0.0)


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    data = load_data(None, resolution=8, seed=0)

    def run(checkpoint=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, 10))
        loader = make_loader(data.train, 64, shuffle=True, seed=3)
        return model, train(model, loader, 3, lr=0.05, checkpoint=checkpoint)

    straight, history = run()
    ckpt = _killed_in_epoch_3(run, tmp_path, monkeypatch)
    resumed, resumed_history = run(ckpt)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]


def test_amp_on_cpu_when_asked_trains_in_bfloat16_to_the_float32_accuracy(trained, digits, loaders):
    runtime = Runtime(amp=True, quiet=True)
    assert runtime.amp_dtype is torch.bfloat16 and Runtime().amp_dtype is None  # CPU: float32 unless asked
    model = tiny_cnn(seed=0)
    seen = set()
    model[0].register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    history = train(model, make_loader(digits.train, 32, True, 0), epochs=3, lr=0.02, runtime=runtime,
                    val_loader=loaders[1])
    assert seen == {torch.bfloat16}
    assert all(math.isfinite(h["loss"]) for h in history)
    assert all(p.dtype is torch.float32 for p in model.parameters())  # the weights stay float32
    assert history[-1]["val_acc"] == pytest.approx(trained[1][-1]["val_acc"], abs=0.05)
    assert evaluate(model, loaders[1], runtime) == pytest.approx(evaluate(model, loaders[1]), abs=0.02)


def test_distillation_under_amp_is_finite(trained, loaders):
    history = train(tiny_cnn(seed=1, width=8), loaders[0], epochs=1, teacher=trained[0],
                    runtime=Runtime(amp=True, quiet=True))
    assert math.isfinite(history[0]["loss"]) and history[0]["loss"] > 0


def test_the_teacher_goes_back_to_its_device_after_training_on_cuda(loaders):
    # the run exports the teacher as baseline.onnx after fine-tuning: it must still be on the CPU
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine; moving the teacher needs a GPU")
    student, teacher = tiny_cnn(seed=1, width=4), tiny_cnn(seed=2, width=8)
    train(student, loaders[0], epochs=1, lr=0.02, teacher=teacher, runtime=Runtime(device=torch.device("cuda"),
                                                                                    quiet=True))
    assert {t.device.type for t in [*teacher.parameters(), *teacher.buffers()]} == {"cpu"}
    assert next(student.parameters()).device.type == "cuda"  # the student stays where it trained


def test_runtime_settings_on_cuda_without_a_gpu(monkeypatch):
    cuda = torch.device("cuda", 0)
    for bf16, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert Runtime(device=cuda).amp_dtype is expected
    assert Runtime(device=cuda, amp=False).amp_dtype is None
    assert Runtime(device=cuda).memory_format is torch.channels_last
    assert Runtime(device=cuda, channels_last=False).memory_format is torch.contiguous_format
    assert Runtime().memory_format is torch.contiguous_format


def test_channels_last_on_cpu_when_asked_gives_the_same_outputs(trained, digits, loaders):
    model = trained[0]
    runtime = Runtime(channels_last=True, quiet=True)
    x = next(iter(loaders[1]))[0]
    model.eval()
    with torch.no_grad():
        plain = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format).train()
    assert torch.allclose(fast, plain, atol=1e-5)
    assert evaluate(model, loaders[1], runtime) == evaluate(model, loaders[1])
    a, b = tiny_cnn(seed=3, width=4), tiny_cnn(seed=3, width=4)
    train(a, make_loader(digits.train, 32, True, 0), epochs=1)
    train(b, make_loader(digits.train, 32, True, 0), epochs=1, runtime=runtime)
    for p, q in zip(a.parameters(), b.parameters()):
        assert q.is_contiguous() and torch.allclose(p, q, atol=1e-4)  # weights come back contiguous


@pytest.fixture
def float16_on_cpu(monkeypatch):
    """The CUDA float16 path (autocast and gradient scaler) on the CPU."""
    monkeypatch.setattr(Runtime, "amp_dtype", property(lambda self: torch.float16))


def _loader_with_outliers(outliers):
    """64 samples of 12 values in batches of 8; the ``outliers`` samples are so large that a float16
    forward pass overflows on every batch that holds one."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 2, 2, generator=g), torch.randint(0, 3, (64,), generator=g)
    x[list(outliers)] *= 1e6
    return make_loader(torch.utils.data.TensorDataset(x, y), 8, shuffle=True, seed=0)


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def test_float16_step_that_overflows_is_skipped_not_divergence(float16_on_cpu):
    model = _linear()
    history = train(model, _loader_with_outliers([5]), epochs=2, lr=0.05)
    assert all(math.isfinite(h["loss"]) for h in history)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the scaler skipped the bad steps


def test_float16_training_that_keeps_overflowing_is_divergence(float16_on_cpu):
    with pytest.raises(CompressError, match="diverged"):
        train(_linear(), _loader_with_outliers(range(0, 64, 2)), epochs=1)


def test_float16_resume_keeps_the_gradient_scaler(float16_on_cpu, tmp_path, monkeypatch):
    import compressor.train as training

    def run(checkpoint=None):
        model = _linear()
        return model, train(model, _loader_with_outliers([5, 40]), 3, lr=0.05, checkpoint=checkpoint)

    straight, history = run()
    ckpt = _killed_in_epoch_3(run, tmp_path, monkeypatch)
    with training.restoring(ckpt, "the test stage") as state:
        assert state["scaler"]["scale"] < 65536.0  # the overflows lowered the initial scale
    resumed, resumed_history = run(ckpt)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]


def test_thread_policy():
    assert default_threads(current=2, cores=2, environ={"OMP_WAIT_POLICY": "PASSIVE"}) == 2
    assert default_threads(current=16, cores=16, environ={}) == 15  # waits spin: leave a core to a neighbour
    assert default_threads(current=2, cores=2, environ={}) == 1
    assert default_threads(current=1, cores=1, environ={}) == 1
    assert default_threads(current=1, cores=8, environ={"OMP_WAIT_POLICY": "passive"}) == 1  # never raised
    assert default_threads(current=3, cores=2, environ={"OMP_NUM_THREADS": "3"}) == 3  # the user's choice


def test_explicit_threads_are_applied_and_checked():
    before = torch.get_num_threads()
    try:
        assert apply_threads(2) == 2
        assert Runtime(threads=1).threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(CompressError, match="threads"):
            Runtime(threads=bad)


def test_prepare_openmp_sets_the_wait_policy_before_torch_loads():
    code = ("import sys; from compressor.runtime import prepare_openmp; prepare_openmp(); "
            "import os; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "PASSIVE"]


def test_prepare_openmp_does_nothing_once_torch_is_loaded(monkeypatch):
    from compressor.runtime import prepare_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    prepare_openmp()
    assert "OMP_WAIT_POLICY" not in os.environ


def _killed_in_epoch_3(run, tmp_path, monkeypatch):
    """Run ``run(checkpoint)`` with checkpoints, then leave the file as it was after epoch 2, as if
    the process had been killed during epoch 3; the checkpoint's path."""
    import compressor.train as training

    ckpt, after_epoch = tmp_path / "ckpt.pt", {}
    save = training._save_checkpoint

    def save_and_keep(path, epoch, *args):
        save(path, epoch, *args)
        after_epoch[epoch] = ckpt.read_bytes()

    monkeypatch.setattr(training, "_save_checkpoint", save_and_keep)
    run(ckpt)
    ckpt.write_bytes(after_epoch[2])
    return ckpt

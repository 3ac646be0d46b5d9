import os

# fail fast instead of retrying a hub download on an offline machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Engine runs in-process set torch's thread count and determinism: give them back after each test."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids paying for thread hand-offs on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_trunk(tmp_path_factory):
    """A (random) pretrained-trunk file for the toy DART configs, which load their scorer trunk frozen
    from results/toy/scorer_trunk/cnn.pt (the workflow's scorer_pretrain rule makes the real one)."""
    from dart.tokenizer.scorers import small_cnn_trunk
    path = tmp_path_factory.mktemp("trunk") / "cnn.pt"
    torch.save({"trunk": small_cnn_trunk().state_dict()}, path)
    return str(path)


@pytest.fixture()
def trunk_override(toy_trunk):
    """The engine override that points a toy DART config at `toy_trunk`."""
    return f"model.kwargs.scorer_weights={toy_trunk}"

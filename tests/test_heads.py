"""Time poolings (lib/models/heads.py) and their use in every 2-D model."""
import pytest
import torch

from lib.models import POOLINGS, build_model
from lib.models.heads import AttentionPool, GeMPool

POOLS = ["mean_max", "gem", "attention"]
# small widths keep the CPU cost low; the pooling path is what is under test
SMALL = {"cnn": {"channels": [8, 16]}, "cnn8": {}, "vgg": {"channels": [8, 16, 16, 32], "convs": [2, 2, 2, 2]}}


def make(name, pooling, n_scalars, in_channels=2, n_outputs=3):
    params = {**SMALL[name], "pooling": pooling}
    return build_model({"name": name, "params": params}, {"spec_shape": [in_channels, 0, 0], "n_scalars": n_scalars},
                       n_outputs)


def test_registry_and_mean_pooling():
    assert POOLINGS.names() == ["attention", "gem", "mean", "mean_max"]
    x = torch.randn(2, 5, 7)
    torch.testing.assert_close(POOLINGS.get("mean")(5)(x)["embedding"], x.mean(dim=2))


@pytest.mark.parametrize("name", ["cnn", "cnn8", "vgg"])
@pytest.mark.parametrize("pooling", POOLS)
@pytest.mark.parametrize("n_scalars", [0, 5])
def test_forward_shapes(name, pooling, n_scalars):
    model = make(name, pooling, n_scalars).eval()
    pool_dim = model.pool.out_dim
    for freq, frames in [(32, 40), (48, 71)]:
        out = model(torch.randn(2, 2, freq, frames), torch.randn(2, n_scalars))
        assert out["logits"].shape == (2, 3)
        assert out["embedding"].shape == (2, pool_dim + (64 if n_scalars else 0))
        if pooling == "attention":
            t = model.trunk(torch.zeros(1, 2, freq, frames)).shape[-1]
            assert out["frame_logits"].shape == out["attention"].shape == (2, t, 3)
            assert model.head is None
        else:
            assert "frame_logits" not in out
    assert pool_dim == {"mean_max": 2, "gem": 1, "attention": 1}[pooling] * model.trunk(torch.zeros(1, 2, 32, 40)).shape[1]


@pytest.mark.parametrize("n_scalars", [0, 4])
def test_attention_frames_aggregate_to_clip(n_scalars):
    model = make("cnn", "attention", n_scalars).eval()
    out = model(torch.randn(3, 2, 32, 50), torch.randn(3, n_scalars))
    att = out["attention"]
    torch.testing.assert_close(att.sum(dim=1), torch.ones(3, 3))
    assert (att >= 0).all()
    torch.testing.assert_close((att * out["frame_logits"]).sum(dim=1), out["logits"])


def test_attention_pool_alone():
    pool = AttentionPool(6, 4).eval()
    out = pool(torch.randn(2, 6, 9))
    assert out["clip_logits"].shape == (2, 4) and out["embedding"].shape == (2, 6)
    torch.testing.assert_close((out["attention"] * out["frame_logits"]).sum(1), out["clip_logits"])


def test_gem_limits():
    x = torch.rand(4, 5, 30) + 0.1
    pool = GeMPool(5)
    assert pool.p.item() == 3.0 and pool.eps == 1e-6
    with torch.no_grad():
        pool.p.fill_(1.0)
        torch.testing.assert_close(pool(x)["embedding"], x.mean(dim=2))
        pool.p.fill_(200.0)
        torch.testing.assert_close(pool(x)["embedding"], x.amax(dim=2), atol=0.02 * 1.1, rtol=0)
        assert (pool(x)["embedding"] <= x.amax(dim=2) + 1e-5).all()


def test_gem_p_is_learnt():
    pool = GeMPool(5)
    pool(torch.rand(2, 5, 7))["embedding"].sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs() > 0


@pytest.mark.parametrize("pooling", POOLS)
def test_one_step_lowers_loss(pooling):
    torch.manual_seed(0)
    model = make("cnn", pooling, 3, n_outputs=2)
    model.train()
    for m in model.modules():  # deterministic forward: dropout off, BatchNorm in batch mode
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x, s, y = torch.randn(8, 2, 32, 40), torch.randn(8, 3), torch.randint(0, 2, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = torch.nn.functional.cross_entropy(model(x, s)["logits"], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = torch.nn.functional.cross_entropy(model(x, s)["logits"], y)
    assert after.item() < loss.item()


@pytest.mark.parametrize("name", ["cnn", "cnn8", "vgg"])
def test_default_state_dict_unchanged(name):
    """The default pooling adds no parameters: keys and shapes are those of a model built without
    ``pooling`` (and the keys of the pre-pooling-option models: trunk, scalar branch, head, buffers)."""
    section = {"name": name, "params": SMALL[name]}
    default = build_model(section, {"spec_shape": [2, 0, 0], "n_scalars": 5}, 3).state_dict()
    explicit = make(name, "mean_max", 5).state_dict()
    assert {k: v.shape for k, v in default.items()} == {k: v.shape for k, v in explicit.items()}
    assert not [k for k in default if k.startswith("pool.")]
    top = {k.split(".")[0] for k in default}
    assert top == {"spec_mean", "spec_std", "scalar_mean", "scalar_std", "trunk", "scalar_branch", "head"}
    # the head's input width is today's 2 * trunk channels + scalar_hidden
    width = make(name, "mean_max", 5).pool.out_dim // 2
    assert default["head.1.weight"].shape[1] == 2 * width + 64


def test_unknown_pooling_lists_known_names():
    from lib.core.errors import ConfigError
    with pytest.raises(ConfigError, match="known: attention, gem, mean, mean_max"):
        make("cnn", "avg", 0)

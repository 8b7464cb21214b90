import numpy as np
import torch

from lib.training.augment import Augmenter, cutmix, mixup, spec_augment


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = torch.randn(n, 2, 16, 20, generator=g)
    scalars = torch.randn(n, 3, generator=g)
    target = (torch.arange(n) % 2).float()[:, None]
    return spec, scalars, target


def test_mixup_label_arithmetic():
    spec, scalars, target = _batch()
    rng = np.random.default_rng(3)
    lam = rng.beta(0.4, 0.4)
    perm = torch.as_tensor(rng.permutation(8))
    s, sc, t, lam_out = mixup(spec, scalars, target, 0.4, np.random.default_rng(3))
    assert lam_out == lam
    torch.testing.assert_close(t, lam * target + (1 - lam) * target[perm])
    torch.testing.assert_close(s, lam * spec + (1 - lam) * spec[perm])
    torch.testing.assert_close(sc, lam * scalars + (1 - lam) * scalars[perm])
    assert ((t >= 0) & (t <= 1)).all()


def test_cutmix_lambda_is_the_kept_area():
    spec, scalars, target = _batch()
    for seed in range(20):
        s, sc, t, lam = cutmix(spec, scalars, target, 1.0, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rng.beta(1.0, 1.0), rng.integers(16), rng.integers(20)
        perm = torch.as_tensor(rng.permutation(8))
        pasted = (s != spec).any(dim=(0, 1)).float().mean().item()  # cells taken from other examples
        assert abs((1 - lam) - pasted) < 1e-6
        torch.testing.assert_close(t, lam * target + (1 - lam) * target[perm])
        # every changed cell holds the permuted example's value
        changed = s != spec
        torch.testing.assert_close(s[changed], spec[perm][changed])


def test_spec_augment_masks_bands_and_augmenter_probabilities():
    spec = torch.arange(4 * 1 * 16 * 20, dtype=torch.float32).reshape(4, 1, 16, 20)
    out = spec_augment(spec, freq_mask=6, time_mask=6)
    assert out.shape == spec.shape
    assert (out != spec).any()
    none = {"mixup": {"p": 0.0, "alpha": 0.4}, "cutmix": {"p": 0.0, "alpha": 1.0}, "spec_augment": {"p": 0.0}}
    s, sc, t = Augmenter(none)(*_batch())
    torch.testing.assert_close(s, _batch()[0])
    always = dict(none, mixup={"p": 1.0, "alpha": 0.4})
    s, sc, t = Augmenter(always, seed=1)(*_batch())
    assert not torch.equal(t, _batch()[2])

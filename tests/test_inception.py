"""FID InceptionV3 (research/models/inception.py) against the PyTorch reference of
tests/inception_reference.py (pytorch-fid's network), random weights."""

import numpy as np
import pytest

from research.errors import UserError
from research.models import inception as inc
from research.models import torch_weights

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (pip install "
                            "torch==2.14.1 torchvision==0.29.1; .ci/run installs them)")
pytest.importorskip("torchvision.models.inception", reason="the PyTorch reference needs "
                    "torchvision (pip install torchvision==0.29.1)")
F = torch.nn.functional

from inception_reference import fid_inception_reference, reference_features  # noqa: E402

RTOL = 1e-4


def ours(variables, images, **fields):
  model = inc.InceptionV3(**fields)
  pool, state = model.apply(variables, np.asarray(images, np.float32),
                            mutable=["intermediates"])
  blocks = dict(zip(inc.MIXED_BLOCKS, map(np.asarray, state["intermediates"]["mixed"])))
  return np.asarray(pool), blocks


def rel_err(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def reference():
  net = fid_inception_reference()
  return net, inc.variables_from_state_dict(net.state_dict(), "reference state_dict")


def test_matches_pytorch_fid_after_every_block_at_299(reference):
  net, variables = reference
  images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3))
  want_pool, want_blocks = reference_features(net, images)
  got_pool, got_blocks = ours(variables, images)
  assert got_pool.shape == (2, 2048)
  for name in inc.MIXED_BLOCKS:
    assert got_blocks[name].shape == want_blocks[name].shape, name
    assert rel_err(got_blocks[name], want_blocks[name]) < RTOL, name
  assert rel_err(got_pool, want_pool) < RTOL
  assert np.abs(got_pool).max() > 1e-2  # the activations neither vanish ...
  assert np.isfinite(got_pool).all()    # ... nor blow up


SMALL = 139  # without the resize: small enough to be quick, the last block still 3x3


@pytest.fixture(scope="module")
def small(reference):
  """One 139x139 image through the reference and through our faithful network."""
  net, variables = reference
  images = np.random.default_rng(2).uniform(0, 1, (1, SMALL, SMALL, 3))
  want, _ = reference_features(net, images, resize=False)
  got, _ = ours(variables, images, resize_input=False)
  return images, want, got


def test_faithful_network_matches_without_resize(small):
  _, want, got = small
  assert rel_err(got, want) < RTOL


def test_grey_images_are_repeated_to_three_channels(reference):
  net, variables = reference
  grey = np.random.default_rng(1).uniform(0, 1, (1, SMALL, SMALL, 1))
  want, _ = reference_features(net, np.repeat(grey, 3, axis=-1), resize=False)
  got, _ = ours(variables, grey, resize_input=False)
  assert rel_err(got, want) < RTOL


@pytest.mark.parametrize("mutation", [dict(last_block_pool="avg"), dict(pool_include_pad=True),
                                      dict(bn_epsilon=1e-5)])
def test_each_pytorch_fid_detail_matters(reference, small, mutation):
  """Change one detail and the comparison that passes for the faithful network fails."""
  _, variables = reference
  images, want, _ = small
  mutated, _ = ours(variables, images, resize_input=False, **mutation)
  assert rel_err(mutated, want) > 10 * RTOL


@pytest.mark.parametrize("size", [8, 28, 32])
def test_resize_matches_torch_interpolate(size):
  """Equal to torch's float64 result to 1e-6; to its float32 one within float32 rounding."""
  x = np.random.default_rng(size).uniform(0, 1, (2, size, size + 3, 3))
  got = np.asarray(inc.resize_bilinear(x.astype(np.float32), 299))
  for dtype, atol in ((np.float64, 1e-6), (np.float32, 5e-6)):
    want = F.interpolate(torch.from_numpy(x.astype(dtype)).permute(0, 3, 1, 2), size=(299, 299),
                         mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_weight_files_round_trip_and_wrong_networks_are_refused(reference, tmp_path):
  net, variables = reference
  pth, legacy = str(tmp_path / "w.pth"), str(tmp_path / "legacy.pth")
  torch.save(net.state_dict(), pth)  # read back without torch, in both torch.save formats
  torch.save(net.state_dict(), legacy, _use_new_zipfile_serialization=False)
  npz = str(tmp_path / "w.npz")
  inc.export_npz(pth, npz)
  for path in (pth, legacy, npz):
    loaded = inc.load_variables(path)
    np.testing.assert_array_equal(loaded["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"],
                                  variables["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"])
  resnet_like = {"conv1.weight": np.zeros((64, 3, 7, 7))}
  with pytest.raises(UserError, match="not pytorch-fid's FID InceptionV3"):
    inc.variables_from_state_dict(resnet_like)
  wrong = {k: v.numpy() for k, v in net.state_dict().items()}
  wrong["Mixed_5b.branch_pool.conv.weight"] = np.zeros((64, 192, 1, 1))  # a different pool width
  with pytest.raises(UserError, match="wrong shapes"):
    inc.variables_from_state_dict(wrong)
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a checkpoint")
  with pytest.raises(UserError, match="not a PyTorch state_dict"):
    torch_weights.read_state_dict(str(garbage))

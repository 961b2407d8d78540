"""FID InceptionV3 (research/models/inception.py) against a PyTorch reference, random weights.

The reference is pytorch-fid's network (Seitzer, `pytorch_fid/inception.py`: `fid_inception_v3`,
`FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`, `FIDInceptionE_2`, and the `InceptionV3`
wrapper's resize and normalisation), rebuilt here on torchvision's InceptionV3 from a reading
of that design: the Inception blocks' average pools exclude padding, the last block max-pools.
"""

import numpy as np
import pytest

from research.errors import UserError
from research.models import inception as inc

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (pip install "
                            "torch==2.14.1 torchvision==0.29.1; .ci/run installs them)")
tv = pytest.importorskip("torchvision.models.inception", reason="the PyTorch reference needs "
                         "torchvision (pip install torchvision==0.29.1)")
F = torch.nn.functional

RTOL = 1e-4


def _avg_pool_excluding_pad(x):
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv.InceptionA):

  def forward(self, x):
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([b1, b5, b3, self.branch_pool(_avg_pool_excluding_pad(x))], 1)


class FIDInceptionC(tv.InceptionC):

  def forward(self, x):
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for i in range(2, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([b1, b7, bd, self.branch_pool(_avg_pool_excluding_pad(x))], 1)


class FIDInceptionE(tv.InceptionE):
  """FIDInceptionE_1 with max_pool=False, FIDInceptionE_2 with max_pool=True."""

  def __init__(self, in_channels, max_pool):
    super().__init__(in_channels)
    self.max_pool = max_pool

  def forward(self, x):
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    if self.max_pool:
      pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    else:
      pooled = _avg_pool_excluding_pad(x)
    return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


def fid_inception_reference(seed: int = 0):
  """pytorch-fid's network with random weights and random batch-norm statistics."""
  torch.manual_seed(seed)
  net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
  net.Mixed_5b, net.Mixed_5c = FIDInceptionA(192, 32), FIDInceptionA(256, 64)
  net.Mixed_5d = FIDInceptionA(288, 64)
  net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
  net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
  net.Mixed_7b, net.Mixed_7c = FIDInceptionE(1280, False), FIDInceptionE(2048, True)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0, (2.0 / fan_in) ** 0.5)
      elif isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.2)
        module.running_mean.normal_(0, 0.2)
        module.running_var.uniform_(0.2, 1.0)
  return net.eval()


def reference_features(net, images_BxHxWxC, resize=True):
  """pytorch-fid's InceptionV3.forward (output_blocks=[3]) and the Mixed blocks' outputs."""
  x = torch.from_numpy(np.asarray(images_BxHxWxC, np.float32)).permute(0, 3, 1, 2)
  if x.shape[1] == 1:
    x = x.repeat(1, 3, 1, 1)
  if resize:
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
  x = 2 * x - 1
  blocks = {}
  with torch.no_grad():
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                 "Conv2d_4a_3x3", "maxpool2") + inc.MIXED_BLOCKS:
      x = getattr(net, name)(x)
      if name.startswith("Mixed"):
        blocks[name] = x.permute(0, 2, 3, 1).numpy()
    pool = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1).numpy()
  return pool, blocks


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
    inc.read_state_dict(str(garbage))

"""pytorch-fid's InceptionV3 as a PyTorch reference with random weights, for the tests and
benchmarks/fid_speed.py. Needs torch and torchvision (the `reference` extra; .ci/run installs them).

The reference is pytorch-fid's network (Seitzer, `pytorch_fid/inception.py`: `fid_inception_v3`,
`FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`, `FIDInceptionE_2`, and the `InceptionV3`
wrapper's resize and normalisation), rebuilt here on torchvision's InceptionV3 from a reading
of that design: the Inception blocks' average pools exclude padding, the last block max-pools.
"""

import numpy as np
import torch
import torchvision.models.inception as tv

from research.models import inception as inc

F = torch.nn.functional


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

"""Times NVIDIA pix2pixHD's own training iteration on this machine (driven by semanticgan_step.py).

Run by `benchmarks/semanticgan_step.py --pix2pixhd=DIR` with a Python that has PyTorch, never
imported by semgan_jax. It builds pix2pixHD's `Pix2PixHDModel` from the checkout in DIR with its
own option parser (`--gpu_ids -1`, the defaults otherwise), then answers commands on stdin with
one `@@ {json}` line each on stdout:
  step N     N training iterations as pix2pixHD's train.py runs them: `model(label, inst, image,
             feat)`, then G's backward and Adam step, then D's; seconds of each.
  forward N  N generator forward passes under `torch.no_grad()`; seconds of each.
  quit       the peak resident memory of this process, then exit.

For a CPU-only PyTorch: `.cuda()` and `torch.cuda.FloatTensor`/`ByteTensor` are shimmed to the
CPU (pix2pixHD calls them even with `--gpu_ids -1`), and when torchvision or its ImageNet VGG19
weights are not there, VGG19 is torchvision's architecture with random weights (the timing does
not depend on the weights).
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import types

import torch
from torch import nn

# torchvision's VGG19 `features` (configuration E): conv widths, 'M' = 2×2 max pool.
VGG19_E = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M']
VGG19_E += [512, 512, 512, 512, 'M']


def emit(payload: dict) -> None:
  print('@@ ' + json.dumps(payload), flush=True)


def _random_vgg19():
  layers, channels = [], 3
  for item in VGG19_E:
    if item == 'M':
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
      channels = item
  return types.SimpleNamespace(features=nn.Sequential(*layers))


def install_shims(gpu: bool) -> str:
  """Points pix2pixHD's CUDA calls at the CPU (unless `gpu`); returns its VGG19 weights."""
  if not gpu:
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.FloatTensor = lambda *args: torch.FloatTensor(*args)
    torch.cuda.ByteTensor = lambda *args: torch.ByteTensor(*args)
  try:
    from torchvision.models import VGG19_Weights

    weights = VGG19_Weights.IMAGENET1K_V1
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(weights.url))
    if os.path.exists(cached):
      return 'torchvision ImageNet'
  except Exception:  # noqa: BLE001 - any broken or missing torchvision means: no weights here
    pass
  module = types.ModuleType('torchvision')
  module.models = types.SimpleNamespace(vgg19=lambda pretrained=False, **kwargs: _random_vgg19())
  sys.modules['torchvision'] = module
  sys.modules['torchvision.models'] = module.models
  return 'random (torchvision or its weights not found)'


def build(checkout: str, height: int, width: int, tiny: bool, gpu: bool):
  """pix2pixHD's model and optimizers, parsed from its own options as `train.py` would."""
  sys.path.insert(0, checkout)
  from models.models import create_model
  from options.train_options import TrainOptions

  argv = ['train.py', '--gpu_ids', '0' if gpu else '-1', '--name', 'semgan_jax_benchmark']
  argv += ['--checkpoints_dir', tempfile.mkdtemp(prefix='pix2pixhd_bench_')]
  argv += ['--loadSize', str(width), '--fineSize', str(height)]
  if tiny:
    argv += ['--ngf', '4', '--ndf', '4', '--n_downsample_global', '2', '--n_blocks_global', '1']
  sys.argv = argv
  stdout = sys.stdout
  sys.stdout = sys.stderr  # the option dump is not part of the protocol
  try:
    opt = TrainOptions().parse()
    model = create_model(opt)
  finally:
    sys.stdout = stdout
  return opt, model


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--checkout', required=True, help='a pix2pixHD checkout (NVIDIA/pix2pixHD)')
  parser.add_argument('--height', type=int, required=True)
  parser.add_argument('--width', type=int, required=True)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--tiny', action='store_true', help='the tiny test network')
  parser.add_argument('--gpu', action='store_true', help="pix2pixHD's --gpu_ids 0 (CUDA torch)")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  vgg_weights = install_shims(args.gpu)
  opt, wrapped = build(args.checkout, args.height, args.width, args.tiny, args.gpu)
  # With GPU ids pix2pixHD wraps the model in DataParallel, as its train.py then expects.
  model = wrapped.module if hasattr(wrapped, 'module') else wrapped
  device = 'cuda' if args.gpu else 'cpu'
  sync = torch.cuda.synchronize if args.gpu else (lambda: None)

  generator = torch.Generator().manual_seed(0)
  size = (1, 1, args.height, args.width)
  blocks = torch.randint(
    0, opt.label_nc, (1, 1, args.height // 8, args.width // 8), generator=generator
  )
  label = blocks.repeat_interleave(8, 2).repeat_interleave(8, 3).float()
  inst = label * 1000 + (torch.arange(args.width) // 16).float().view(1, 1, 1, -1).expand(size)
  image = torch.rand((1, 3, args.height, args.width), generator=generator) * 2 - 1
  feat = torch.zeros(1)  # pix2pixHD's data loader passes 0 when no features are encoded
  label, inst, image = (t.to(device) for t in (label, inst, image))

  def iteration():
    losses, _ = wrapped(label, inst, image, feat, infer=False)
    losses = [torch.mean(x) if not isinstance(x, int) else x for x in losses]
    loss = dict(zip(model.loss_names, losses, strict=True))
    loss_d = (loss['D_fake'] + loss['D_real']) * 0.5
    loss_g = loss['G_GAN'] + loss.get('G_GAN_Feat', 0) + loss.get('G_VGG', 0)
    model.optimizer_G.zero_grad()
    loss_g.backward()
    model.optimizer_G.step()
    model.optimizer_D.zero_grad()
    loss_d.backward()
    model.optimizer_D.step()
    sync()
    return float(loss_g), float(loss_d)

  g_input = model.encode_input(label, inst)[0]

  def forward():
    with torch.no_grad():
      model.netG(g_input)
    sync()

  start = time.perf_counter()
  iteration()  # first iteration: allocations and thread pools warm up
  emit(
    {
      'ready': True,
      'first_step_s': time.perf_counter() - start,
      'torch': torch.__version__,
      'threads': torch.get_num_threads(),
      'vgg_weights': vgg_weights,
      'g_params': sum(p.numel() for p in model.netG.parameters()),
      'd_params': sum(p.numel() for p in model.netD.parameters()),
      'num_D': opt.num_D,
    }
  )
  for line in sys.stdin:
    command, _, count = line.strip().partition(' ')
    if command == 'quit':
      break
    fn = {'step': iteration, 'forward': forward}[command]
    times = []
    for _ in range(int(count or 1)):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    emit({'times': times})
  peak_device = torch.cuda.max_memory_allocated() / 2**20 if args.gpu else None
  emit(
    {
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'peak_device_mb': peak_device,
    }
  )


if __name__ == '__main__':
  main()

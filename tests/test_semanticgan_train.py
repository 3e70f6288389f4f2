"""SemanticGAN's schedule, pure train step and config checks on the procedural streets set."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from semgan_jax import parallel
from semgan_jax.errors import UserInputError
from semgan_jax.tasks import TASKS, semanticgan
from semgan_jax.train import optim, runner, semanticgan_step
from semgan_jax.train.semanticgan_step import create_semanticgan_state, make_semanticgan_step

TASK = TASKS['semanticgan']


def test_epoch_schedule_boundaries(streets_config):
  config = streets_config.copy_and_resolve_references()
  config.optim.lr, config.optim.epochs_constant, config.optim.epochs_decay = 2e-4, 3, 2
  schedule = optim.build_schedule(config.optim, num_steps=50, per_epoch=10)
  values = {step: float(schedule(step)) for step in (0, 29, 30, 35, 40, 45, 50, 60)}
  assert values[0] == values[29] == values[30] == pytest.approx(2e-4)  # epochs 0-2: constant
  assert values[40] == pytest.approx(1e-4)  # halfway through the decay epochs
  assert values[35] == pytest.approx(1.5e-4) and values[45] == pytest.approx(0.5e-4)
  assert values[50] == 0.0 and values[60] == 0.0  # 0 after epoch 5


def test_total_steps_follow_the_epochs(streets_config):
  config = streets_config.copy_and_resolve_references()
  config.train.num_steps = 0
  config.optim.epochs_constant, config.optim.epochs_decay = 2, 3
  per_epoch = optim.steps_per_epoch(100, config.data.batch_size)
  assert optim.resolve_num_steps(config, per_epoch) == 5 * (100 // config.data.batch_size)


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, h, w = config.data.batch_size, config.data.height, config.data.width
  # Blocky maps, as real ones: a per-pixel random map would make the boundary channel all ones,
  # a constant that InstanceNorm removes, leaving its weights a zero gradient (Adam's sign noise).
  blocks = rng.integers(0, config.data.num_classes, (b, h // 8, w // 8)).astype(np.int32)
  labels = blocks.repeat(8, axis=1).repeat(8, axis=2)
  return {
    'image': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
    'label': labels,
    'instance': labels * 1000 + (np.arange(w) // 16)[None, None],
  }


@pytest.fixture(scope='module')
def init_state(streets_config):
  return create_semanticgan_state(streets_config, jax.random.key(0))


def _step(config, **kwargs):
  return jax.jit(make_semanticgan_step(num_classes=config.data.num_classes, **kwargs))


def _changed(a, b):
  return any(
    np.any(np.asarray(x) != np.asarray(y))
    for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True)
  )


@pytest.mark.parametrize('adversarial', ['lsgan', 'bce', 'hinge'])
def test_step_updates_both_networks(streets_config, init_state, adversarial):
  state, metrics = _step(streets_config, adversarial=adversarial, lambda_vgg=0.0)(
    init_state, _batch(streets_config), jax.random.key(1)
  )
  assert int(state.step) == 1
  for key in ('train/g_loss', 'train/d_loss', 'train/g_adv', 'train/g_feat'):
    assert np.isfinite(float(metrics[key])), key
  assert _changed(state.g_params, init_state.g_params)
  assert _changed(state.d_params, init_state.d_params)


def _assert_same_update(a, b, start):
  """`a` and `b` took the same update from `start`, to float rounding of its largest element."""
  updates = [jax.tree.map(lambda x, s: np.asarray(x) - np.asarray(s), t, start) for t in (a, b)]
  scale = max(float(np.abs(u).max()) for u in jax.tree.leaves(updates[0]))
  for x, y in zip(*map(jax.tree.leaves, updates), strict=True):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * scale)


def test_instance_noise_reaches_only_the_discriminator_inputs(streets_config, init_state):
  """Off: the step ignores its rng. On: D's inputs get fresh noise per rng (so the loss moves),
  at the scheduled std, while G's photo and its L1 to the real one are untouched."""
  batch = _batch(streets_config)
  plain = _step(streets_config, lambda_vgg=0.0)
  noisy = _step(streets_config, lambda_vgg=0.0, instance_noise_std=0.3, instance_noise_steps=4)
  runs = {
    (name, seed): step(init_state, batch, jax.random.key(seed))[1]
    for name, step in (('plain', plain), ('noisy', noisy))
    for seed in (1, 2)
  }
  assert runs['plain', 1]['train/d_loss'] == runs['plain', 2]['train/d_loss']
  assert 'train/instance_noise_std' not in runs['plain', 1]
  assert float(runs['noisy', 1]['train/instance_noise_std']) == pytest.approx(0.3)
  d_losses = {float(runs[key]['train/d_loss']) for key in runs}
  assert len(d_losses) == 3  # Plain (both rngs), and each noisy draw.
  l1 = {float(metrics['train/g_l1_to_real']) for metrics in runs.values()}
  assert len(l1) == 1
  halfway = init_state.replace(step=jnp.asarray(2, init_state.step.dtype))
  _, metrics = noisy(halfway, batch, jax.random.key(1))
  assert float(metrics['train/instance_noise_std']) == pytest.approx(0.15)


def test_a_config_from_before_l1_and_instance_noise_still_runs(streets_config, init_state):
  """A run's config.json written before the fields existed (resume, eval, dream) opens as off."""
  config = streets_config.copy_and_resolve_references()
  with config.unlocked():
    del config.loss['instance_noise_std'], config.loss['instance_noise_steps']
    del config.loss['lambda_l1']
  spec = TASK.check_config(config)
  _, metrics = jax.jit(TASK.make_train_step(config, spec))(
    init_state, _batch(config), jax.random.key(0)
  )
  assert 'train/instance_noise_std' not in metrics


def test_l1_term_is_the_mean_absolute_error_to_the_photo(streets_config, init_state):
  config = streets_config.copy_and_resolve_references()
  config.loss.lambda_l1 = 10.0
  spec = TASK.check_config(config)
  _, metrics = jax.jit(TASK.make_train_step(config, spec))(
    init_state, _batch(config), jax.random.key(0)
  )
  m = {key: float(value) for key, value in metrics.items()}
  assert m['train/g_l1'] == pytest.approx(m['train/g_l1_to_real'], rel=1e-6)
  total = m['train/g_adv'] + config.loss.lambda_feat * m['train/g_feat'] + 10.0 * m['train/g_l1']
  assert m['train/g_loss'] == pytest.approx(total, rel=1e-5)


def test_instance_noise_without_an_rng_is_a_clear_error(streets_config, init_state):
  gradients = semanticgan_step.make_semanticgan_gradients(
    num_classes=streets_config.data.num_classes, lambda_vgg=0.0, instance_noise_std=0.1
  )
  with pytest.raises(ValueError, match='needs the step rng'):
    gradients(init_state, _batch(streets_config))


def test_generator_terms_never_move_the_discriminator(streets_config):
  """D's update is the same whatever G's loss weights are, and G's ignores D's optimizer.

  SGD with momentum, not Adam: Adam's first step is lr * sign(gradient), which turns a rounding
  difference in a near-zero gradient element (another program's fusion) into a full step, while
  SGD's update is the gradient itself, so a leak of G's terms (x100 here) stands out.
  """
  state = create_semanticgan_state(streets_config, jax.random.key(0), tx=optax.sgd(1e-2, 0.9))
  batch, rng = _batch(streets_config), jax.random.key(2)
  l1 = (1.0, lambda frozen, fake, batch: jnp.mean(jnp.abs(fake)))
  plain, _ = _step(streets_config, lambda_vgg=0.0)(state, batch, rng)
  heavy, _ = _step(streets_config, lambda_vgg=0.0, lambda_feat=100.0, extra_g_losses={'l1': l1})(
    state, batch, rng
  )
  _assert_same_update(plain.d_params, heavy.d_params, state.d_params)
  assert _changed(plain.g_params, heavy.g_params)
  # A different D optimizer state (momentum) changes D's update but not G's.
  moved_trace = jax.tree.map(lambda x: x + 1.0, state.d_opt_state)
  moved, _ = _step(streets_config, lambda_vgg=0.0)(
    state.replace(d_opt_state=moved_trace), batch, rng
  )
  _assert_same_update(plain.g_params, moved.g_params, state.g_params)
  assert _changed(plain.d_params, moved.d_params)


def test_perceptual_term_uses_the_frozen_vgg(streets_config):
  from semgan_jax.models.vgg import VGG19Features

  config = streets_config
  vgg = VGG19Features().init(jax.random.key(3), jnp.zeros((1, 32, 64, 3)))['params']
  state = create_semanticgan_state(config, jax.random.key(0), {'vgg': vgg})
  new_state, metrics = _step(config, lambda_vgg=10.0)(state, _batch(config), jax.random.key(1))
  assert float(metrics['train/g_vgg']) > 0
  # Frozen means frozen: the VGG weights leave the step untouched.
  assert not _changed(new_state.frozen_params, state.frozen_params)


def _plain_step(state, batch, *, num_classes, lambda_feat, lambda_vgg, extra):
  """The step written the plain way: jax.grad of each loss through its own D and VGG passes."""
  import functools

  from semgan_jax import losses
  from semgan_jax.images import uint8_to_signed
  from semgan_jax.models.inputs import label_to_generator_input
  from semgan_jax.models.vgg import VGG19Features

  x = label_to_generator_input(batch['label'], batch['instance'], num_classes)
  real = uint8_to_signed(batch['image'])
  vgg_fn = functools.partial(
    VGG19Features(conv_lowering='xla').apply, {'params': state.frozen_params['vgg']}
  )

  def run_d(d_params, images):
    outputs = state.discriminator.apply({'params': d_params}, x, images)
    return [o[-1] for o in outputs], [o[:-1] for o in outputs]

  def g_loss_fn(g_params):
    fake = state.generator.apply({'params': g_params}, x)
    fake_logits, fake_features = run_d(state.d_params, fake)
    _, real_features = run_d(state.d_params, real)
    total = losses.multiscale_g_adv_loss(fake_logits) + lambda_feat * (
      losses.multiscale_feature_matching_loss(real_features, fake_features)
    )
    total += lambda_vgg * losses.vgg_perceptual_loss(vgg_fn, fake, real)
    total += extra(state.frozen_params, fake, batch)
    return total, fake

  (g_loss, fake), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)

  def d_loss_fn(d_params):
    real_logits, _ = run_d(d_params, real)
    fake_logits, _ = run_d(d_params, jax.lax.stop_gradient(fake))
    return losses.multiscale_d_loss(real_logits, fake_logits)

  d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
  return g_loss, d_loss, g_grads, d_grads


def test_one_pass_step_equals_the_plain_formulation(streets_config):
  """Each network output computed once gives the losses and gradients of separate passes."""
  from semgan_jax.models.vgg import VGG19Features

  config = streets_config
  vgg = VGG19Features().init(jax.random.key(3), jnp.zeros((1, 32, 64, 3)))['params']
  state = create_semanticgan_state(config, jax.random.key(0), {'vgg': vgg})
  batch = _batch(config)
  extra = lambda frozen, fake, batch: jnp.mean(jnp.square(fake))  # noqa: E731
  kwargs = dict(num_classes=config.data.num_classes, lambda_feat=10.0, lambda_vgg=10.0)
  gradients = semanticgan_step.make_semanticgan_gradients(
    **kwargs, extra_g_losses={'l2': (1.0, extra)}, vgg=VGG19Features(conv_lowering='xla')
  )
  ours_g, ours_d, metrics = jax.jit(gradients)(state, batch)
  g_loss, d_loss, g_grads, d_grads = jax.jit(lambda s, b: _plain_step(s, b, **kwargs, extra=extra))(
    state, batch
  )
  np.testing.assert_allclose(float(metrics['train/g_loss']), float(g_loss), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['train/d_loss']), float(d_loss), rtol=1e-5)
  for ours, plain in ((ours_g, g_grads), (ours_d, d_grads)):
    for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(plain), strict=True
    ):
      scale = float(jnp.max(jnp.abs(b))) + 1e-12
      assert float(jnp.max(jnp.abs(a - b))) <= 2e-4 * scale, jax.tree_util.keystr(path)


def test_bfloat16_and_remat_stay_close_to_float32(streets_config):
  """model.dtype=bfloat16 keeps float32 parameters and losses near float32's; remat is exact."""
  from semgan_jax.models.vgg import VGG19Features

  vgg = VGG19Features().init(jax.random.key(3), jnp.zeros((1, 32, 64, 3)))['params']
  batch = _batch(streets_config)
  results = {}
  for name, fields in {
    'float32': {},
    'bfloat16': {'dtype': 'bfloat16'},
    'remat': {'remat': True},
  }.items():
    config = streets_config.copy_and_resolve_references()
    config.model.update(fields)
    state = create_semanticgan_state(config, jax.random.key(0), {'vgg': vgg})
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.g_params))
    gradients = semanticgan_step.make_semanticgan_gradients(
      num_classes=config.data.num_classes, lambda_vgg=10.0, vgg=semanticgan_step.build_vgg(config)
    )
    g_grads, d_grads, metrics = jax.jit(gradients)(state, batch)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves((g_grads, d_grads)))
    results[name] = (g_grads, metrics)
  f32, bf16, remat = (results[k][1] for k in ('float32', 'bfloat16', 'remat'))
  for key in ('train/g_loss', 'train/d_loss', 'train/g_vgg', 'train/g_feat'):
    assert f32[key].dtype == bf16[key].dtype == jnp.float32
    np.testing.assert_allclose(float(bf16[key]), float(f32[key]), rtol=0.05)
    np.testing.assert_allclose(float(remat[key]), float(f32[key]), rtol=1e-5)
  for a, b in zip(*(jax.tree.leaves(results[k][0]) for k in ('remat', 'float32')), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(b))))


def test_perceptual_loss_without_weights_is_a_clear_error(streets_config, tmp_path):
  config = streets_config.copy_and_resolve_references()
  config.loss.lambda_vgg = 10.0
  config.loss.vgg_weights = str(tmp_path / 'vgg19.npz')
  with pytest.raises(UserInputError, match=r'(?s)lambda_vgg=10.0 .*vgg19.npz.*lambda_vgg=0'):
    runner.train(TASK, config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_sipl_term_segments_the_fake_with_the_frozen_erfnet(streets_config, erfnet_npz):
  from semgan_jax.data import cityscapes
  from semgan_jax.models import ERFNet

  config = streets_config.copy_and_resolve_references()
  config.loss.lambda_sipl, config.loss.erfnet_weights = 1.0, str(erfnet_npz)
  frozen = semanticgan.load_frozen_params(config)
  assert set(frozen) == {'erfnet'} and set(frozen['erfnet']) == {'params', 'batch_stats'}
  extra = semanticgan.extra_g_losses(config)
  weight, sipl = extra['sipl']
  assert weight == 1.0

  # The term is the cross-entropy of ERFNet's softmax on G's image mapped to [0, 1], against the
  # training ids of the label map, void pixels left out.
  batch = _batch(config)
  fake = np.random.default_rng(2).uniform(-1, 1, batch['image'].shape).astype(np.float32)
  logits = np.asarray(ERFNet().apply(frozen['erfnet'], (fake + 1) / 2), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  train_ids = cityscapes.TRAIN_IDS[batch['label']].astype(np.int64)
  valid = train_ids != cityscapes.IGNORE_TRAIN_ID
  picked = np.take_along_axis(log_probs, np.where(valid, train_ids, 0)[..., None], -1)[..., 0]
  expected = -picked[valid].mean()
  np.testing.assert_allclose(float(jax.jit(sipl)(frozen, fake, batch)), expected, rtol=1e-4)

  # In the step: logged, part of the loss G descends (λ1·adv + λ3·feat + λ2·SIPL), and ERFNet
  # itself never moves.
  state = create_semanticgan_state(config, jax.random.key(0), frozen)
  new_state, metrics = _step(config, lambda_vgg=0.0, extra_g_losses=extra)(
    state, batch, jax.random.key(1)
  )
  m = {k: float(v) for k, v in metrics.items()}
  assert np.isfinite(m['train/g_sipl']) and m['train/g_sipl'] > 0
  total = m['train/g_adv'] + config.loss.lambda_feat * m['train/g_feat'] + m['train/g_sipl']
  assert m['train/g_loss'] == pytest.approx(total, rel=1e-5)
  assert _changed(new_state.g_params, state.g_params)
  assert not _changed(new_state.frozen_params, state.frozen_params)


@pytest.mark.parametrize(
  ('field', 'value', 'message'),
  [
    ('model.block', 'dense', "config.model.block='dense'"),
    ('data.height', 30, 'height/width=30x64, but streets:32x64 is 32x64'),
    ('model.num_downsamplings', 6, 'divisible by 2\\*\\*config.model.num_downsamplings=64'),
    ('data.num_classes', 19, 'streets has 35 classes'),
    ('loss.adversarial', 'wgan', "config.loss.adversarial='wgan'"),
    ('loss.lambda_feat', -1.0, 'lambda_feat=-1.0'),
    ('loss.lambda_sipl', -1.0, 'lambda_sipl=-1.0; expected >= 0'),
  ],
)
def test_bad_configs_are_named(streets_config, tmp_path, field, value, message):
  config = streets_config.copy_and_resolve_references()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(UserInputError, match=message):
    runner.train(TASK, config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_step_on_eight_devices_matches_one(streets_config, init_state):
  """The same global batch sharded over 8 devices gives the parameters of one device."""
  step = make_semanticgan_step(num_classes=35, lambda_vgg=0.0)
  batch, rng = _batch(streets_config), jax.random.key(4)
  one, one_metrics = jax.jit(step)(init_state, batch, rng)
  mesh = parallel.create_mesh()
  repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  eight, eight_metrics = jax.jit(
    step, in_shardings=(repl, sharded, repl), out_shardings=(repl, repl)
  )(jax.device_put(init_state, repl), jax.device_put(batch, sharded), rng)
  for key in ('train/g_loss', 'train/d_loss', 'train/g_grad_norm', 'train/d_grad_norm'):
    np.testing.assert_allclose(float(one_metrics[key]), float(eight_metrics[key]), rtol=1e-5)
  # Adam's first step is lr·g/(|g| + ε): where a gradient is ~0, summation-order noise moves a
  # weight by up to ~lr. A wrong reduction would move most weights; allow a handful of those.
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves((one.g_params, one.d_params))])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves((eight.g_params, eight.d_params))])
  off = np.abs(a - b) > 1e-6
  assert off.mean() < 1e-3, f'{off.sum()} of {off.size} weights differ'
  assert np.abs(a - b).max() < 2 * 2e-4


def _cityscapes_config(repo_root, variant):
  spec = importlib.util.spec_from_file_location('configs_city', repo_root / 'configs/cityscapes.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_ablation_columns(repo_root):
  """Table 1's columns a-f: the residual block and whether SIPL is on."""
  expected = {
    'a': ('resnet', 0.0),
    'b': ('res2net', 0.0),
    'c': ('resnet', 1.0),
    'd': ('res2net', 1.0),
    'e': ('crb', 0.0),
    'f': ('crb', 1.0),
  }
  for column, (block, sipl) in expected.items():
    config = _cityscapes_config(repo_root, column)
    assert (config.model.block, config.loss.lambda_sipl) == (block, sipl)
  full = _cityscapes_config(repo_root, '')
  assert (full.data.height, full.data.width, full.model.num_blocks) == (512, 1024, 9)
  assert (full.optim.epochs_constant, full.optim.epochs_decay) == (100, 100)
  with pytest.raises(ValueError, match="unknown variant 'g'"):
    _cityscapes_config(repo_root, 'g')


def test_cityscapes_without_archives_and_sipl_are_clear_errors(repo_root, tmp_path):
  config = _cityscapes_config(repo_root, 'e,small')
  config.loss.lambda_vgg = 0.0
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.manual_dir = str(tmp_path / 'manual')
  with pytest.raises(UserInputError, match='leftImg8bit_trainvaltest.zip'):
    runner.train(TASK, config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()
  with_sipl = _cityscapes_config(repo_root, 'f,small')
  with_sipl.loss.lambda_vgg = 0.0
  with_sipl.loss.erfnet_weights = str(tmp_path / 'erfnet.npz')
  message = r'(?s)lambda_sipl=1.0 asks for SIPL.*erfnet_pretrained.pth.*semgan_jax.weights.erfnet'
  with pytest.raises(UserInputError, match=message):
    runner.train(TASK, with_sipl, str(tmp_path / 'run_f'))
  assert not (tmp_path / 'run_f' / 'checkpoints').exists()

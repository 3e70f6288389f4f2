"""Tests of the SemGAN train step, device parallelism, checkpointing and the training loop."""

import functools
import json
import logging
import pathlib
import struct

import chex
import jax
import numpy as np
import pytest

from semgan_jax import data, parallel
from semgan_jax.train import checkpointing, loop
from semgan_jax.train.semgan_step import generate, make_train_step, sample_latents
from semgan_jax.train.state import create_train_state

SPEC = data.get_dataset_spec('colored_shapes')
GLOBAL_BATCH = 8


def _mesh(num_devices: int):
  return parallel.create_mesh(jax.devices()[:num_devices])


@functools.cache
def _jit_step(num_devices: int = 8, generator_loss: str = 'feature_matching'):
  """The step jitted as the loop jits it (same shardings, donation): one executable per case."""
  mesh = _mesh(num_devices)
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    make_train_step(palette=SPEC.palette, generator_loss=generator_loss, fm_layer=-1),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )


def _rng(step: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(7), step)


def _put(state, mesh):
  """A fresh copy of `state` replicated over `mesh` (the step donates, i.e. deletes, its input)."""
  sharding = parallel.replicated(mesh)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.device_put(np.array(x), sharding)

  return jax.tree.map(put, state)


def _batch(labels, mesh):
  return parallel.make_global_batch({'label': labels}, mesh)


def _leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree.leaves_with_path(tree)}


def _pre_norm_biases(params) -> list[str]:
  """Per-channel biases right before a BatchNorm (the norm would cancel them; there must be none).

  `project`'s bias is per position, not per channel, so the norm does not remove it.
  """
  return [
    layer
    for layer, leaves in params.items()
    if 'bias' in leaves
    and f'{layer}_norm' in params
    and leaves['bias'].shape == params[f'{layer}_norm']['scale'].shape
  ]


def _assert_params_close(a, b, rtol=1e-5, atol=1e-6):
  """Compares two param trees leaf by leaf."""
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys()
  for name in la:
    np.testing.assert_allclose(la[name], lb[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture(scope='module')
def init_state(tiny_config):
  """The tiny config's initial state, built exactly as the loop builds it (on 8 devices)."""
  assert jax.device_count() == 8
  return loop._init_state(tiny_config, _mesh(8))


@pytest.fixture(scope='module')
def source(tiny_config):
  return data.load_source(tiny_config.data.name, tiny_config.data.data_dir)


def _input_iterator(source, config):
  return data.create_input_iterator(
    source,
    global_batch_size=config.data.batch_size,
    num_classes=config.data.num_classes,
    seed=config.seed,
  )


@pytest.fixture(scope='module')
def labels(source, tiny_config):
  """The first four global batches of the loop's input stream."""
  assert tiny_config.data.batch_size == GLOBAL_BATCH
  it = _input_iterator(source, tiny_config)
  return [next(it)['label'] for _ in range(4)]


# --- The train step. -------------------------------------------------------------------------


def test_train_step_updates_both_networks(init_state, labels):
  mesh = _mesh(8)
  new, metrics = _jit_step()(_put(init_state, mesh), _batch(labels[0], mesh), _rng(0))
  metrics = jax.device_get(metrics)

  assert int(init_state.step) == 0 and int(new.step) == 1
  assert {'train/g_loss', 'train/d_loss', 'train/g_feature_matching'} <= metrics.keys()
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert 0 < metrics['train/d_real_prob'] < 1 and 0 < metrics['train/d_fake_prob'] < 1

  for params in ('g_params', 'd_params'):
    old, updated = _leaves(getattr(init_state, params)), _leaves(getattr(new, params))
    assert old.keys() == updated.keys()
    # No dead parameters: a bias in front of a BatchNorm would get a zero gradient.
    assert _pre_norm_biases(getattr(init_state, params)) == [], params
    for name in old:
      # Adam's first step moves every weight with a non-zero gradient by about lr.
      assert np.all(old[name] != updated[name]), f'{params}{name} not (fully) updated'
  for name in ("['head_semantic']['kernel']", "['head_semantic']['bias']"):
    assert np.all(_leaves(init_state.g_params)[name] != _leaves(new.g_params)[name])
  for name in ("['down0']['kernel']", "['down0']['bias']", "['logit']['kernel']"):
    assert np.all(_leaves(init_state.d_params)[name] != _leaves(new.d_params)[name])
  # BatchNorm running averages move in both networks.
  for stats in ('g_batch_stats', 'd_batch_stats'):
    old, updated = _leaves(getattr(init_state, stats)), _leaves(getattr(new, stats))
    assert all(np.any(old[k] != updated[k]) for k in old), stats
  # Both optimizers (Adam and its learning-rate schedule) counted one update.
  counts = [x for x in jax.tree.leaves((new.g_opt_state, new.d_opt_state)) if x.dtype == np.int32]
  assert len(counts) >= 2 and all(int(c) == 1 for c in counts)


def test_generator_objective_only_changes_the_generator_update(init_state, labels):
  """The D update comes first and sees G only through its (constant) outputs: it is the same
  whichever loss G is trained on, and g_loss is exactly the selected objective."""
  mesh = _mesh(1)
  batch = _batch(labels[0], mesh)
  out = {
    loss: jax.device_get(_jit_step(1, loss)(_put(init_state, mesh), batch, _rng(0)))
    for loss in ('feature_matching', 'non_saturating')
  }
  (fm_state, fm), (ns_state, ns) = out['feature_matching'], out['non_saturating']

  assert fm['train/g_loss'] == fm['train/g_feature_matching']
  assert ns['train/g_loss'] == ns['train/g_non_saturating']
  assert fm['train/g_loss'] != ns['train/g_loss']
  # Both G passes run against the same updated D on the same latents, before G's update.
  for key in ('train/g_feature_matching', 'train/g_non_saturating', 'train/g_max_prob'):
    np.testing.assert_allclose(fm[key], ns[key], rtol=1e-6, err_msg=key)
  for key in ('train/d_loss', 'train/d_real_prob', 'train/d_fake_prob', 'train/d_grad_norm'):
    np.testing.assert_allclose(fm[key], ns[key], rtol=1e-6, err_msg=key)
  _assert_params_close(fm_state.d_params, ns_state.d_params)
  # ... while G's update follows its own objective.
  assert not np.allclose(
    fm_state.g_params['head_semantic']['kernel'], ns_state.g_params['head_semantic']['kernel']
  )
  with pytest.raises(ValueError, match='wasserstein'):
    make_train_step(palette=SPEC.palette, generator_loss='wasserstein')


def test_eight_devices_match_one_device(init_state, labels):
  results = {}
  for n in (8, 1):
    mesh = _mesh(n)
    state, metrics = _put(init_state, mesh), []
    for step in range(2):
      batch = _batch(labels[step], mesh)
      # The batch really is split over the mesh: one (8 / n)-row shard per device.
      assert len(batch['label'].sharding.device_set) == n
      assert [s.data.shape for s in batch['label'].addressable_shards] == [
        (GLOBAL_BATCH // n, 64, 64)
      ] * n
      state, m = _jit_step(n)(state, batch, _rng(step))
      metrics.append(jax.device_get(m))
    assert len(state.g_params['head_semantic']['kernel'].sharding.device_set) == n
    results[n] = jax.device_get(state), metrics

  (state8, metrics8), (state1, metrics1) = results[8], results[1]
  for m8, m1 in zip(metrics8, metrics1, strict=True):
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=2e-5, err_msg=key)
  # BatchNorm statistics are taken over the global batch, so the updates agree.
  _assert_params_close(state8.g_params, state1.g_params)
  _assert_params_close(state8.d_params, state1.d_params)
  for stats8, stats1 in (
    (state8.g_batch_stats, state1.g_batch_stats),
    (state8.d_batch_stats, state1.d_batch_stats),
  ):
    for layer in stats1:
      for stat in ('mean', 'var'):
        np.testing.assert_allclose(
          stats8[layer][stat], stats1[layer][stat], rtol=1e-5, atol=1e-6, err_msg=f'{layer}.{stat}'
        )


def test_train_step_compiles_once(init_state, labels, caplog):
  chex.clear_trace_counter()
  mesh = _mesh(8)
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  step_fn = jax.jit(
    chex.assert_max_traces(make_train_step(palette=SPEC.palette), n=1),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )
  state = _put(init_state, mesh)
  compiles = []
  with caplog.at_level(logging.WARNING), jax.log_compiles():
    for step in range(3):
      caplog.clear()
      # The output state feeds the next call: same structure, dtypes and shardings.
      state, _ = step_fn(state, _batch(labels[step], mesh), _rng(step))
      compiles.append(
        [r for r in caplog.records if r.getMessage().startswith('Compiling jit(train_step)')]
      )
  assert int(state.step) == 3
  # One trace (chex raises on a second), one compile (from the persistent cache or not).
  assert [len(c) for c in compiles] == [1, 0, 0]


def test_checkpoint_resume_is_exact(init_state, source, tiny_config, tmp_path):
  """4 steps straight == 2 steps, checkpoint (state + input position), restore, 2 more steps."""
  mesh = _mesh(8)

  def run(state, it, steps):
    metrics, seen = [], []
    for step in steps:
      labels = next(it)['label']
      state, m = _jit_step()(state, _batch(labels, mesh), _rng(step))
      metrics.append(jax.device_get(m))
      seen.append(labels)
    return state, metrics, seen

  straight, straight_metrics, straight_labels = run(
    _put(init_state, mesh), _input_iterator(source, tiny_config), range(4)
  )

  it = _input_iterator(source, tiny_config)
  half, _, _ = run(_put(init_state, mesh), it, range(2))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.save(2, half, it, force=True)
  ckpt.wait_until_finished()
  ckpt.close()

  fresh_it = _input_iterator(source, tiny_config)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 2
  restored = ckpt.restore(_put(init_state, mesh), fresh_it)
  ckpt.close()
  assert int(restored.step) == 2
  resumed, resumed_metrics, resumed_labels = run(restored, fresh_it, range(2, 4))

  for a, b in zip(straight_labels[2:], resumed_labels, strict=True):
    np.testing.assert_array_equal(a, b)
  assert straight_metrics[2:] == resumed_metrics
  a, b = checkpointing.state_to_tree(straight), checkpointing.state_to_tree(resumed)
  for (name, x), y in zip(_leaves(a).items(), _leaves(b).values(), strict=True):
    np.testing.assert_array_equal(x, y, err_msg=name)


def test_generator_ema(init_state, labels, tmp_path):
  """With g_ema_decay=d the average after two steps is d²·θ0 + d(1-d)·θ1 + (1-d)·θ2; samples
  come from it; it is checkpointed, and a state without EMA stores no EMA entry."""
  assert init_state.g_ema_params is None
  assert 'g_ema_params' not in checkpointing.state_to_tree(init_state)
  decay, mesh = 0.9, _mesh(8)
  state = _put(init_state.replace(g_ema_params=init_state.g_params, g_ema_decay=decay), mesh)
  thetas = [_leaves(state.g_params)]
  for step in range(2):
    state, _ = _jit_step()(state, _batch(labels[step], mesh), _rng(step))
    thetas.append(_leaves(state.g_params))
  ema = _leaves(state.g_ema_params)
  for name in thetas[0]:
    expected = (
      decay**2 * thetas[0][name]
      + decay * (1 - decay) * thetas[1][name]
      + (1 - decay) * thetas[2][name]
    )
    np.testing.assert_allclose(ema[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)
  assert any(not np.allclose(ema[n], thetas[2][n]) for n in ema)

  z = sample_latents(jax.random.key(3), 4, state.latent_dim)
  variables = {'params': state.g_ema_params, 'batch_stats': state.g_batch_stats}
  np.testing.assert_allclose(
    generate(state, z), state.generator.apply(variables, z, train=False), rtol=1e-6
  )
  assert not np.allclose(generate(state, z), generate(state.replace(g_ema_params=None), z))

  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.save(2, state, force=True)
  ckpt.wait_until_finished()
  template = _put(init_state.replace(g_ema_params=init_state.g_params, g_ema_decay=decay), mesh)
  restored = ckpt.restore(template)
  ckpt.close()
  for name, value in _leaves(restored.g_ema_params).items():
    np.testing.assert_array_equal(value, ema[name], err_msg=name)


def test_instance_noise_decays_and_changes_the_d_update(init_state, labels):
  """Noise std is σ0·(1 - step/N) (σ0 at step 0, 0 from step N on), and it reaches D's inputs."""
  mesh = _mesh(8)
  noisy = jax.jit(
    make_train_step(palette=SPEC.palette, instance_noise_std=0.5, instance_noise_steps=4)
  )
  batch = _batch(labels[0], mesh)
  stds = []
  for step in (0, 2, 4, 6):
    state = _put(init_state, mesh).replace(step=jax.numpy.asarray(step, jax.numpy.int32))
    _, metrics = noisy(state, batch, _rng(0))
    stds.append(float(metrics['train/instance_noise_std']))
  np.testing.assert_allclose(stds, [0.5, 0.25, 0.0, 0.0], atol=1e-7)

  _, with_noise = noisy(_put(init_state, mesh), batch, _rng(0))
  _, without = _jit_step()(_put(init_state, mesh), batch, _rng(0))
  assert float(without['train/instance_noise_std']) == 0.0
  assert not np.isclose(float(with_noise['train/d_loss']), float(without['train/d_loss']))


# --- The training loop. ----------------------------------------------------------------------


def _read_scalars(workdir) -> dict[int, dict[str, float]]:
  """Every scalar of every TensorBoard event file in `workdir`, by step (TFRecord framing)."""
  from tensorboardX.proto import event_pb2

  scalars = {}
  for path in sorted(pathlib.Path(workdir).glob('events.out.tfevents.*')):
    raw = path.read_bytes()
    pos = 0
    while pos < len(raw):
      (length,) = struct.unpack('<Q', raw[pos : pos + 8])
      event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        if value.HasField('simple_value'):
          scalars.setdefault(event.step, {})[value.tag] = value.simple_value
  return scalars


def _zip_leaves(a, b):
  la = _leaves(checkpointing.state_to_tree(a))
  lb = _leaves(checkpointing.state_to_tree(b))
  assert la.keys() == lb.keys()
  return [(k, (la[k], lb[k])) for k in la]


@pytest.fixture(scope='module')
def loop_runs(tiny_config, tmp_path_factory):
  """The tiny run straight through (A), and stopped after step 2 then resumed (B)."""
  config = tiny_config.copy_and_resolve_references()
  config.train.log_every_steps = 1
  assert config.train.num_steps == 4 and config.train.ckpt_every_steps == 2
  workdir_a = str(tmp_path_factory.mktemp('run_a'))
  workdir_b = str(tmp_path_factory.mktemp('run_b'))

  state_a = loop.train_and_evaluate(config, workdir_a)

  first_half = config.copy_and_resolve_references()
  first_half.train.num_steps = 2
  state_b_half = loop.train_and_evaluate(first_half, workdir_b)

  restored_steps = []
  restore = checkpointing.Checkpointer.restore

  def spy(self, *args, **kwargs):
    state = restore(self, *args, **kwargs)
    restored_steps.append(int(state.step))
    return state

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checkpointing.Checkpointer, 'restore', spy)
    state_b = loop.train_and_evaluate(config, workdir_b)
  return {
    'config': config,
    'workdir_a': workdir_a,
    'workdir_b': workdir_b,
    'state_a': state_a,
    'state_b_half': state_b_half,
    'state_b': state_b,
    'restored_steps': restored_steps,
  }


def test_loop_writes_outputs(loop_runs):
  workdir = pathlib.Path(loop_runs['workdir_a'])
  assert int(loop_runs['state_a'].step) == 4
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == [
    '2',
    '4',
  ]
  assert sorted(p.name for p in (workdir / 'samples').iterdir()) == [
    'step_0000002.png',
    'step_0000004.png',
  ]
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['model']['g_base_features'] == loop_runs['config'].model.g_base_features
  scalars = _read_scalars(workdir)
  assert sorted(scalars) == [1, 2, 3, 4]
  assert {'train/g_loss', 'train/d_loss', 'train/steps_per_sec'} <= scalars[4].keys()


def test_loop_resume_matches_uninterrupted_run(loop_runs):
  workdir_a, workdir_b = loop_runs['workdir_a'], loop_runs['workdir_b']
  assert int(loop_runs['state_b_half'].step) == 2
  # The second run of B continued from its step-2 checkpoint rather than starting over.
  assert loop_runs['restored_steps'] == [2]
  state_a, state_b = loop_runs['state_a'], loop_runs['state_b']
  assert int(state_a.step) == int(state_b.step) == 4
  for name, (x, y) in _zip_leaves(state_a, state_b):
    np.testing.assert_array_equal(x, y, err_msg=name)

  # Steps 3 and 4 saw the same batches and logged the same losses.
  scalars_a, scalars_b = _read_scalars(workdir_a), _read_scalars(workdir_b)
  assert sorted(scalars_b) == [1, 2, 3, 4]
  for step in (3, 4):
    a = {k: v for k, v in scalars_a[step].items() if k != 'train/steps_per_sec'}
    b = {k: v for k, v in scalars_b[step].items() if k != 'train/steps_per_sec'}
    assert a == b, step

  # The input position is saved with the state, and equal in both runs.
  positions = [
    json.loads((pathlib.Path(w) / 'checkpoints/4/data/process_0-of-1.json').read_text())
    for w in (workdir_a, workdir_b)
  ]
  assert positions[0] == positions[1]
  assert json.dumps(positions[0]) != json.dumps(
    json.loads((pathlib.Path(workdir_a) / 'checkpoints/2/data/process_0-of-1.json').read_text())
  )

  # The final checkpoints hold the returned states.
  for workdir, state in ((workdir_a, state_a), (workdir_b, state_b)):
    ckpt = checkpointing.Checkpointer(workdir)
    assert ckpt.latest_step() == 4
    restored = ckpt.restore(_put(state, _mesh(8)))
    ckpt.close()
    for name, (x, y) in _zip_leaves(restored, state):
      np.testing.assert_array_equal(x, y, err_msg=name)


def test_loop_refuses_incompatible_checkpoint(loop_runs, file_listing):
  workdir = loop_runs['workdir_a']
  config = loop_runs['config'].copy_and_resolve_references()
  config.model.g_base_features *= 2
  before = file_listing(workdir)
  with pytest.raises(checkpointing.CheckpointError, match='model.g_base_features') as info:
    loop.train_and_evaluate(config, workdir)
  assert 'incompatible' in str(info.value)
  assert file_listing(workdir) == before


def test_loop_resumes_with_changed_training_fields(loop_runs):
  """Fields outside the architecture (steps, lr, cadence) may change between runs."""
  config = loop_runs['config'].copy_and_resolve_references()
  config.optim.lr = 3e-4
  config.train.log_every_steps = 2
  # Already at step 4: nothing to train, but the checkpoint is accepted and restored.
  state = loop.train_and_evaluate(config, loop_runs['workdir_a'])
  assert int(state.step) == 4


# --- Input validation. -----------------------------------------------------------------------


@pytest.mark.parametrize(
  ('field', 'value', 'message'),
  [
    ('model.head', 'foo', 'config.model.head'),
    ('data.num_classes', 5, 'num_classes'),
    ('data.image_size', 32, 'config.data.image_size'),
    ('data.name', 'nope', 'nope'),
    ('loss.generator', 'hinge', 'config.loss.generator'),
    ('model.kernel_size', 0, 'config.model.kernel_size'),
    ('train.log_every_steps', 0, 'config.train.log_every_steps'),
  ],
)
def test_validate_config_errors(tiny_config, tmp_path, field, value, message):
  config = tiny_config.copy_and_resolve_references()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(loop.UserInputError, match=message):
    loop.validate_config(config)
  # The loop checks its input before it writes anything.
  workdir = tmp_path / 'workdir'
  with pytest.raises(loop.UserInputError, match=message):
    loop.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_validate_config_accepts_tiny(tiny_config):
  assert loop.validate_config(tiny_config) == SPEC


def test_unwritable_workdir(tiny_config, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  workdir = str(blocker / 'workdir')
  with pytest.raises(loop.UserInputError, match='cannot be written') as info:
    loop.train_and_evaluate(tiny_config, workdir)
  assert workdir in str(info.value)
  assert blocker.read_text() == 'not a directory'


def test_indivisible_global_batch(tiny_config, tmp_path):
  config = tiny_config.copy_and_resolve_references()
  config.data.batch_size = 12  # Not a multiple of the 8 devices.
  with pytest.raises(loop.UserInputError, match='batch_size=12'):
    loop.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
  ('field', 'value'),
  [
    ('optim.schedule', 'foo'),
    ('model.dtype', 'foo'),
    ('loss.fm_layer', 4),
    ('train.num_samples', 0),
    ('seed', -1),
    ('model.g_ema_decay', 1.0),
    ('loss.instance_noise_std', -0.1),
  ],
)
def test_validate_config_gaps(tiny_config, field, value):
  config = tiny_config.copy_and_resolve_references()
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(loop.UserInputError):
    loop.validate_config(config)


def test_sample_without_checkpoint(tiny_config, tmp_path):
  with pytest.raises(loop.UserInputError, match='train first'):
    loop.sample(tiny_config, str(tmp_path / 'never_trained'), num_samples=2)
  with pytest.raises(loop.UserInputError, match='num_samples=0'):
    loop.sample(tiny_config, str(tmp_path / 'never_trained'), num_samples=0)


def test_sample_without_checkpoint_writes_nothing(tiny_config, tmp_path):
  workdir = tmp_path / 'never_trained'
  with pytest.raises(loop.UserInputError, match='train first'):
    loop.sample(tiny_config, str(workdir), num_samples=2)
  assert not workdir.exists()


def test_remat_generator_gives_the_same_step(tiny_config, labels):
  """model.remat recomputes G's activations in the backward pass: same parameters, same step."""
  config = tiny_config.copy_and_resolve_references()
  config.model.remat = True
  plain = create_train_state(tiny_config, jax.random.key(0))
  remat = create_train_state(config, jax.random.key(0))
  assert jax.tree.structure(plain.g_params) == jax.tree.structure(remat.g_params)
  step = make_train_step(palette=SPEC.palette, generator_loss=tiny_config.loss.generator)
  batch = {'label': labels[0]}
  (new_plain, m_plain), (new_remat, m_remat) = (
    jax.jit(step)(state, batch, _rng(0)) for state in (plain, remat)
  )
  for key in ('train/g_loss', 'train/d_loss'):
    np.testing.assert_allclose(float(m_remat[key]), float(m_plain[key]), rtol=1e-5)
  for a, b in zip(*map(jax.tree.leaves, (new_remat.g_params, new_plain.g_params)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

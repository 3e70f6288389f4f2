"""The SemGAN train step, device parallelism and checkpointing (the runner: test_runner.py)."""

import functools
import logging

import chex
import jax
import numpy as np
import pytest

from semgan_jax import data, losses, parallel
from semgan_jax.train import checkpointing, runner
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
  init = jax.jit(
    functools.partial(create_train_state, tiny_config),
    out_shardings=parallel.replicated(_mesh(8)),
  )
  return init(runner.rng_streams(tiny_config.seed)['init'])


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
  with_ema = init_state.replace(
    g_ema_params=init_state.g_params,
    g_ema_batch_stats=init_state.g_batch_stats,
    g_ema_decay=decay,
  )
  state = _put(with_ema, mesh)
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
  # Samples use the averaged weights with their own BatchNorm statistics, not the live G's.
  variables = {'params': state.g_ema_params, 'batch_stats': state.g_ema_batch_stats}
  np.testing.assert_allclose(
    generate(state, z), state.generator.apply(variables, z, train=False), rtol=1e-6
  )
  assert not np.allclose(generate(state, z), generate(state.replace(g_ema_params=None), z))
  live, averaged = _leaves(state.g_batch_stats), _leaves(state.g_ema_batch_stats)
  assert any(not np.allclose(live[n], averaged[n]) for n in live)

  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.save(2, state, force=True)
  ckpt.wait_until_finished()
  restored = ckpt.restore(_put(with_ema, mesh))
  ckpt.close()
  for name, value in _leaves(restored.g_ema_params).items():
    np.testing.assert_array_equal(value, ema[name], err_msg=name)
  for name, value in _leaves(restored.g_ema_batch_stats).items():
    np.testing.assert_array_equal(value, averaged[name], err_msg=name)


def test_generator_ema_tracks_its_own_batch_norm_statistics(init_state, labels):
  """The averaged network's statistics come from a train-mode pass of it on the G step's
  latents: with the average frozen at G's weights (decay 1), the first step gives it exactly the
  statistics G's own step gives G, which ran the same weights on the same latents."""
  mesh = _mesh(8)
  frozen = init_state.replace(
    g_ema_params=init_state.g_params, g_ema_batch_stats=init_state.g_batch_stats, g_ema_decay=1.0
  )
  state, _ = _jit_step()(_put(frozen, mesh), _batch(labels[0], mesh), _rng(0))
  live, averaged = _leaves(state.g_batch_stats), _leaves(state.g_ema_batch_stats)
  before = _leaves(init_state.g_batch_stats)
  for name in live:
    np.testing.assert_allclose(averaged[name], live[name], rtol=1e-5, atol=1e-6, err_msg=name)
  assert any(not np.allclose(live[n], before[n]) for n in live)


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
  constant = [float(losses.instance_noise_std(jax.numpy.int32(s), 0.5, 0)) for s in (0, 9)]
  assert constant == [0.5, 0.5]  # instance_noise_steps=0: never decays.
  with pytest.raises(ValueError, match='decay_steps=-1; expected >= 0'):
    losses.instance_noise_std(jax.numpy.int32(0), 0.5, -1)

  _, with_noise = noisy(_put(init_state, mesh), batch, _rng(0))
  _, without = _jit_step()(_put(init_state, mesh), batch, _rng(0))
  assert float(without['train/instance_noise_std']) == 0.0
  assert not np.isclose(float(with_noise['train/d_loss']), float(without['train/d_loss']))


def _zip_leaves(a, b):
  la = _leaves(checkpointing.state_to_tree(a))
  lb = _leaves(checkpointing.state_to_tree(b))
  assert la.keys() == lb.keys()
  return [(k, (la[k], lb[k])) for k in la]


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

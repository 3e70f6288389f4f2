"""Command-line entry point: flags, multi-host initialisation, then a lookup: task, then mode."""

import logging as logging_std
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from semgan_jax import tasks
from semgan_jax.errors import UserInputError
from semgan_jax.train import checkpointing, faults, runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Experiment config file, e.g. configs/shapes.py or configs/shapes.py:quick.'
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and summaries.')
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'sample', 'eval', 'dream'],
  'What to do with the config and workdir (dream: with a dream config, configs/dream_streets.py).',
)
flags.DEFINE_integer(
  'checkpoint_step',
  None,
  '--mode=eval|sample: the checkpoint to use (default: the newest readable one).',
)
flags.DEFINE_integer(
  'num_samples', None, '--mode=sample|dream: how many to generate (default: 64; dream: its config).'
)
flags.DEFINE_integer(
  'sample_seed', None, '--mode=sample|dream: latent seed (default: config.seed).'
)
flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() before touching devices (multi-host TPU pods and GPU '
  'clusters; coordinator, process count and id come from the flags below or the environment).',
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (with --distributed).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --distributed).')
flags.DEFINE_integer('process_id', None, 'This process (with --distributed).')
flags.DEFINE_string(
  'compilation_cache_dir',
  '~/.cache/semgan_jax/xla',
  "JAX's persistent compilation cache: a resumed run or --mode=sample reuses compiled steps "
  "instead of recompiling (seconds to minutes). '' disables it.",
)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter from orbax and tfds (dozens of lines per checkpoint) unless -v 1 or more."""

  _NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorflow_datasets{os.sep}')

  def filter(self, record: logging_std.LogRecord) -> bool:
    if record.levelno >= logging_std.WARNING or logging.get_verbosity() > logging.INFO:
      return True
    return not any(part in record.pathname for part in self._NOISY)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache_dir))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  if FLAGS.distributed:
    # Must run before any call that initialises a backend.
    jax.distributed.initialize(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
    )
  logging.info(
    'JAX process %d/%d, %d local / %d global devices.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  try:
    task = tasks.get_task(FLAGS.config)
    if FLAGS.mode not in task.modes:
      raise UserInputError(
        f'--mode={FLAGS.mode} does not run config.task={task.name!r}; it runs with '
        + ', '.join(f'--mode={m}' for m in task.modes)
        + (
          ' (a dream config names two trained runs: configs/dream_streets.py).'
          if FLAGS.mode == 'dream'
          else '.'
        )
      )
    MODES[FLAGS.mode](task, FLAGS.config, FLAGS.workdir)
  except (UserInputError, checkpointing.CheckpointError) as e:
    logging.debug('Input error', exc_info=True)
    sys.exit(f'semgan_jax: error: {e}')
  except faults.Preempted as e:
    logging.warning('%s', e)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Before training started (the loop itself saves and stops).
    print('semgan_jax: interrupted; nothing was saved.', file=sys.stderr)
    sys.exit(130)


def _train(task, config, workdir):
  runner.train(task, config, workdir)


def _sample(task, config, workdir):
  paths = runner.sample(
    task,
    config,
    workdir,
    num_samples=64 if FLAGS.num_samples is None else FLAGS.num_samples,
    seed=FLAGS.sample_seed,
    step=FLAGS.checkpoint_step,
  )
  print('Wrote ' + ' and '.join(paths.values()))


def _dream(task, config, workdir):
  paths = runner.dream(
    task,
    config,
    workdir,
    get_task=tasks.get_task,
    num_samples=FLAGS.num_samples,
    seed=FLAGS.sample_seed,
  )
  print('Wrote ' + ', '.join(paths.values()))


def _eval(task, config, workdir):
  results = runner.evaluate(task, config, workdir, step=FLAGS.checkpoint_step)
  step = results['step']
  print(f'Evaluated step {step}: {results["workdir"]}/eval/step_{step:07d}.json')


MODES = {'train': _train, 'sample': _sample, 'eval': _eval, 'dream': _dream}


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags and loads the config file, turning their errors into one line.

  ml_collections loads `--config` lazily and reports a missing file (OSError) or an unknown
  `--config.a.b` field (AttributeError / KeyError) with a traceback; this reports them as
  `semgan_jax: error: ...` and exits before anything is created.
  """
  try:
    rest = FLAGS(argv)
    # A config that failed to load is a placeholder raising on attribute access: touch one.
    FLAGS.config.get('seed')
  except flags.Error as e:
    sys.exit(f'semgan_jax: error: {_without_traceback(str(e))}\nPass --helpshort to see the flags.')
  except (AttributeError, KeyError) as e:
    field = str(e).strip('"\'')
    overrides = [a for a in argv[1:] if a.startswith('--config.') and field in a]
    sys.exit(
      f'semgan_jax: error: unknown config field {field!r} in {" ".join(overrides) or "--config"}; '
      'expected a field that the config file defines (its get_config() lists them).'
    )
  except (OSError, ValueError, TypeError) as e:
    message = ' '.join(line.strip() for line in str(e).splitlines() if line.strip())
    sys.exit(f'semgan_jax: error: bad --config or --config.* override: {message}')
  return rest


def _without_traceback(message: str) -> str:
  """ml_collections embeds a whole traceback in some flag errors; keep the first and last line."""
  lines = [line for line in message.splitlines() if line.strip()]
  if any(line.startswith('Traceback') for line in lines):
    return f'{lines[0]} {lines[-1]}'
  return message


def run():
  """Console-script entry point (`semgan-jax`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()

"""What the reproduction scripts share: runs as a user makes them, seeds, tables, provenance.

Each table is a list of `Run`s: a config file, its overrides and a seed. `run_all` trains each
one with `python -m semgan_jax.main` in its own process (exactly the user's command, which trains
and evaluates at the end) into `<out>/runs/<name>`, one after the other (timings stay clean), and
records its final evaluation and wall time in `<out>/runs/<name>/experiment.json`. A run with
that file is not run again, and an interrupted run resumes from its last checkpoint (the runner's
exact resume), so re-running a script after a stop continues where it was.

`table` aggregates the runs of each row over seeds (mean ± sample standard deviation, ddof=1) at
a fixed precision: the same seeds on the same machine give the same table (the runs are
deterministic on a CPU).
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a table: `row` names its row, `seed` its place among the seeds."""

  row: str
  config: str  # 'configs/<file>.py[:variant]', relative to the repository.
  seed: int
  overrides: tuple[str, ...] = ()  # '--config.<field>=<value>' flags.

  @property
  def name(self) -> str:
    return run_name(self.row, self.seed)


def run_name(row: str, seed: int) -> str:
  """The folder of a row's run with one seed, under `<out>/runs/`."""
  slug = ''.join(c if c.isalnum() else ' ' for c in row.lower())
  return f'{"_".join(slug.split())}_seed{seed}'


def final_eval(workdir: pathlib.Path) -> dict:
  """The newest evaluation a run wrote (`eval/step_<n>.json`), with its step."""
  files = sorted((workdir / 'eval').glob('step_*.json'))
  if not files:
    raise RuntimeError(f'{workdir} holds no evaluation (eval/step_*.json)')
  result = json.loads(files[-1].read_text())
  result['step'] = int(files[-1].stem.split('_')[1])
  return result


def run_one(run: Run, out: pathlib.Path, env: dict | None = None) -> dict:
  """Trains (or resumes) one run; returns its record (also written to experiment.json)."""
  workdir = out / 'runs' / run.name
  record_file = workdir / 'experiment.json'
  if record_file.exists():
    return json.loads(record_file.read_text())
  command = [
    sys.executable,
    '-m',
    'semgan_jax.main',
    f'--config={run.config}',
    f'--workdir={workdir}',
    f'--config.seed={run.seed}',
    *run.overrides,
  ]
  log = out / 'runs' / f'{run.name}.log'
  log.parent.mkdir(parents=True, exist_ok=True)
  print(f'[{_now()}] {run.name}: {" ".join(command[2:])}', flush=True)
  start = time.perf_counter()
  with log.open('a') as f:
    result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
  seconds = time.perf_counter() - start
  if result.returncode:
    tail = log.read_text().strip().splitlines()[-5:]
    raise RuntimeError(f'{run.name} failed (exit {result.returncode}); {log}:\n' + '\n'.join(tail))
  evaluation = final_eval(workdir)
  record = {
    'run': dataclasses.asdict(run),
    'command': ' '.join(['python', *command[1:]]),
    'seconds': seconds,  # This invocation only (a resumed run's earlier part is not counted).
    'step': evaluation['step'],
    'evaluators': evaluation['evaluators'],
  }
  tmp = record_file.with_suffix('.tmp')
  tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
  os.replace(tmp, record_file)
  print(f'[{_now()}] {run.name}: done in {seconds:.0f} s', flush=True)
  return record


def run_all(runs: Sequence[Run], out: pathlib.Path, env: dict | None = None) -> list[dict]:
  """Every run, in order (seed-major, so that a partial table already has every row)."""
  return [run_one(run, out, env) for run in runs]


def metric(record: dict, evaluator: str, name: str) -> float:
  return float(record['evaluators'][evaluator]['metrics'].get(name, float('nan')))


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: a metric of an evaluator, its header and printed decimals. `key` names the
  column in `aggregate`'s rows (default: the metric's name; set it where two evaluators report a
  metric of the same name)."""

  evaluator: str
  metric: str
  header: str
  decimals: int
  key: str = ''

  def __post_init__(self):
    if not self.key:
      object.__setattr__(self, 'key', self.metric)


def aggregate(records: list[dict], columns: Sequence[Column]) -> dict[str, dict]:
  """{row: {'seeds': [...], column.key: {'mean', 'std', 'values'}}} over each row's records."""
  rows: dict[str, dict] = {}
  for record in records:
    row = rows.setdefault(record['run']['row'], {'seeds': [], 'seconds': []})
    row['seeds'].append(record['run']['seed'])
    row['seconds'].append(record['seconds'])
    for column in columns:
      entry = row.setdefault(column.key, {'values': []})
      entry['values'].append(metric(record, column.evaluator, column.metric))
  for row in rows.values():
    for column in columns:
      entry = row[column.key]
      values = np.asarray(entry['values'], np.float64)
      entry['mean'] = float(values.mean())
      entry['std'] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return rows


def effect(rows: dict, metric: str, with_, without) -> tuple[float, float, float]:
  """The change of `metric`'s mean from the runs of rows `without` to those of rows `with_`
  (each a list of rows, whose runs are pooled), its standard error (√(s₁²/n₁ + s₂²/n₂): the
  spread of the difference expected from the seeds alone) and the smallest |change| Welch's
  t-test calls significant at 5% (two-sided, at the Welch–Satterthwaite degrees of freedom: from
  2.8 SE for 3 + 3 seeds of equal spread up to 4.3)."""
  from scipy import stats

  a, b = ([v for r in group for v in rows[r][metric]['values']] for group in (with_, without))
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  se = float(np.sqrt(va + vb))
  delta = float(np.mean(a) - np.mean(b))
  if se == 0:
    return delta, 0.0, 0.0
  df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  return delta, se, float(stats.t.ppf(0.975, df) * se)


def verdict(delta: float, threshold: float, lower_is_better: bool, paper_delta) -> str:
  """'within seed variance' where |Δ| is below `threshold` (`effect`'s); otherwise whether the
  change agrees with the direction of the paper's FID change (`paper_delta`), or, without one,
  is better or worse."""
  if abs(delta) <= threshold:
    return 'within seed variance'
  better = delta < 0 if lower_is_better else delta > 0
  if paper_delta is None:
    return 'better' if better else 'worse'
  return 'agrees' if better == (paper_delta < 0) else 'disagrees'


def markdown_table(
  rows: dict[str, dict],
  columns: Sequence[Column],
  notes: dict[str, str],
  notes_header: str = 'agrees with the paper?',
) -> str:
  """Rows of mean ± std (n seeds), a column per metric and the row's note last."""
  header = ['', 'seeds', *[c.header for c in columns], notes_header]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, row in rows.items():
    cells = [name, str(len(row['seeds']))]
    for c in columns:
      entry = row[c.key]
      cells.append(f'{entry["mean"]:.{c.decimals}f} ± {entry["std"]:.{c.decimals}f}')
    cells.append(notes.get(name, ''))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def provenance() -> dict:
  """The machine, versions and commit the numbers come from."""
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  commit = subprocess.run(
    ['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True, check=False
  ).stdout.strip()
  return {
    'machine': f'{cpu}, {os.cpu_count()} cores',
    'python': platform.python_version(),
    'jax': jax.__version__,
    'devices': str(jax.devices()),
    'commit': commit or 'unknown',
    'date': _now(),
  }


def samples_figure(
  out: pathlib.Path,
  records: list[dict],
  path: pathlib.Path,
  *,
  vertical: bool = False,
  colors: int = 0,
) -> None:
  """The first seed's final sample grid of each row (runs under `<out>/runs`), side by side (or
  stacked), each under its row's name, written to `path` (quantized to `colors` colours)."""
  from PIL import Image, ImageDraw

  grids = []
  first = min(r['run']['seed'] for r in records)
  for record in records:
    if record['run']['seed'] != first:
      continue
    workdir = out / 'runs' / run_name(record['run']['row'], first)
    files = sorted((workdir / 'samples').glob('step_*.png'))
    if files:
      grids.append((record['run']['row'], Image.open(files[-1]).convert('RGB')))
  if not grids:
    return
  title, gap = 30, 20
  if vertical:
    size = (max(g.width for _, g in grids), sum(g.height + title + gap for _, g in grids) - gap)
  else:
    size = (sum(g.width + gap for _, g in grids) - gap, max(g.height for _, g in grids) + title)
  figure = Image.new('RGB', size, 'white')
  draw, x, y = ImageDraw.Draw(figure), 0, 0
  for caption, grid in grids:
    figure.paste(grid, (x, y + title))
    draw.text((x + 4, y + 8), caption, fill='black')
    if vertical:
      y += grid.height + title + gap
    else:
      x += grid.width + gap
  (figure.quantize(colors) if colors else figure).save(path, optimize=True)


def footer(
  records: list[dict], start: float, info: dict, script: str, args, shared=''
) -> list[str]:
  """The lines under a table: how many runs took how long, where, and the command (the script's
  flags from `args`, an argparse namespace; empty and zero ones left out)."""
  seconds = sum(r['seconds'] for r in records)
  flags = ''.join(f' --{k}={v}' for k, v in vars(args).items() if v not in ('', 0, None))
  return [
    f'{len(records)} runs, {seconds / 60:.0f} min of training and evaluation{shared} '
    f'(this invocation: {(time.perf_counter() - start) / 60:.0f} min); {info["machine"]}, '
    f'JAX {info["jax"]}, Python {info["python"]}, commit {info["commit"]}.',
    f'Command: `python experiments/{script}{flags}`.',
  ]


def write_outputs(out: pathlib.Path, name: str, markdown: str, data: dict) -> None:
  """`<out>/<name>.md` and `<out>/<name>.json`, each written atomically."""
  out.mkdir(parents=True, exist_ok=True)
  for suffix, text in (('.md', markdown), ('.json', json.dumps(data, indent=2, sort_keys=True))):
    path = out / f'{name}{suffix}'
    tmp = path.with_suffix(suffix + '.tmp')
    tmp.write_text(text + '\n')
    os.replace(tmp, path)


def _now() -> str:
  return datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')

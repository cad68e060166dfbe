r"""The ThiNet procedure on a trained model: prune, fine-tune, report.

  python -m train.prune --config configs/fmnist_vgg16_thinet.py \
      --workdir runs/prune

Group by group (paper section 3.3): statistics on class-balanced training
images through the current model, selection by the configured criterion,
least squares, surgery, a short fine-tune; then a final fine-tune. Every
step is checkpointed under <workdir>: the same command started again after
an interruption continues where it stopped and ends with the same result;
started again after it finished, it prints the result again. A rerun under
another config stops before any work and names the differing fields
(`--config.restart_from=STEP` redoes a step and all after it). Writes
<workdir>/report.json, report.md, accuracy.png, widths.png and the pruned
model to <workdir>/model.
"""

import dataclasses
import os

import jax
from absl import app, flags

from thinet_jax import (
  depgraph,
  factories,
  nets,
  pipeline,
  procedure,
  profile,
  report,
  rundir,
  select,
  sharding,
  stats,
  surgery,
  train,
)
from thinet_jax.options import REFITS
from thinet_jax.progress import minutes
from train import common

common.define_flags()
flags.adopt_module_key_flags(common.cli)

OUTPUTS = ("model", "report.md", "accuracy.png", "widths.png")


@dataclasses.dataclass(frozen=True)
class Checked:
  """A train.prune config, validated before anything is loaded."""

  spec: object  # The model the groups are pruned from (after a new head).
  names: list[str]
  ratios: float | list[float]


def validate(config) -> Checked:
  """Every field of a train.prune config, checked before any data is read
  or anything compiled: a bad value fails in a second, naming the field."""
  common.validate_training(config)
  if config.criterion not in select.CRITERIA:
    raise app.UsageError(
      f"config.criterion={config.criterion!r} is not a criterion; known: "
      f"{', '.join(select.CRITERIA)}"
    )
  if config.target not in pipeline.TARGETS:
    raise app.UsageError(
      f"config.target must be one of {pipeline.TARGETS}, got {config.target!r}"
    )
  if config.refit not in REFITS:
    raise app.UsageError(
      f"config.refit must be one of {REFITS}, got {config.refit!r}"
    )
  if config.refit == "kernel" and not config.least_squares:
    raise app.UsageError(
      'config.refit="kernel" is a least-squares fit: set '
      "config.least_squares=True"
    )
  if config.stats_mode not in stats.MODES:
    raise app.UsageError(
      f"config.stats_mode must be one of {stats.MODES}, got "
      f"{config.stats_mode!r}"
    )
  if config.head not in ("", "gap"):
    raise app.UsageError(
      f'config.head must be "" (keep the head) or "gap", got {config.head!r}'
    )
  for field in ("images_per_class", "samples_per_image"):
    if config[field] < 1:
      raise app.UsageError(f"config.{field} must be >= 1, got {config[field]}")
  for field in ("bn_batches", "finetune_epochs", "stage_end_epochs",
                "head_finetune_epochs", "finetune_lr", "ridge"):  # fmt: skip
    if config[field] < 0:
      raise app.UsageError(f"config.{field} must be >= 0, got {config[field]}")
  if not 0.0 <= config.distill_weight <= 1.0:
    raise app.UsageError(
      f"config.distill_weight must be in [0, 1], got {config.distill_weight}"
    )
  if config.distill_features < 0:
    raise app.UsageError(
      f"config.distill_features must be >= 0, got {config.distill_features}"
    )
  if config.distill_temperature <= 0:
    raise app.UsageError(
      "config.distill_temperature must be > 0, got "
      f"{config.distill_temperature}"
    )
  ratios = config.keep_ratio
  if isinstance(ratios, list | tuple):
    ratios = list(ratios)
  values = ratios if isinstance(ratios, list) else [ratios]
  if not values or not all(
    isinstance(r, int | float) and not isinstance(r, bool) for r in values
  ):
    raise app.UsageError(
      f"config.keep_ratio must be a number in (0, 1] or one per group, "
      f"e.g. --config.keep_ratio=0.5 or '--config.keep_ratio=(0.5,0.25)'; "
      f"got {config.keep_ratio!r}"
    )
  for r in values:
    if not 0.0 < r <= 1.0:
      raise app.UsageError(
        f"config.keep_ratio must be in (0, 1] (the fraction of channels "
        f"kept), got {r}"
      )
  spec = common.checkpoint_spec(config)
  if common.spec_of(spec) is None:  # any model, from its factory
    if config.head:
      raise app.UsageError(
        "config.head (ThiNet-GAP) is for the presets only so far; a model "
        f"factory ({config.model}) keeps its own head: set config.head=''"
      )
  elif config.head:
    spec = surgery.gap_spec(spec)
  names = common.group_names(config, spec)
  try:  # Unknown groups, a per-group list of the wrong length.
    procedure.plan(spec, names, ratios)
  except (KeyError, ValueError) as e:
    raise app.UsageError(
      f"config.groups / config.keep_ratio: {common.one_line(e)}"
    ) from None
  if config.budget:
    if not 0.0 < config.budget < 1.0:
      raise app.UsageError(
        "config.budget must be in (0, 1) (the fraction of the cost kept; "
        f"0 = off), got {config.budget}"
      )
    model = depgraph.cost_model(
      factories.graph_of(spec, config.image_size), names,
      factories.example(spec, config.image_size), metric=config.budget_metric,
    )  # fmt: skip
    floor = model.cost([1] * len(names)) / model.cost(model.widths)
    if config.budget < floor:
      raise app.UsageError(
        f"config.budget={config.budget} is out of reach: with one channel "
        f"left in every pruned group the model still costs {floor:.3f} of "
        f"its {config.budget_metric}; raise the budget or prune more groups"
      )
  return Checked(spec, names, ratios)


def main(argv):
  config, workdir, _ = common.start(argv)
  common.require_checkpoint(config, "train.prune")
  checked = validate(config)
  with common.locked(workdir):
    clock = rundir.WallClock(workdir)
    _prune(config, workdir, checked, clock)


def _prune(config, workdir, checked, clock):
  run = common.setup(config)
  base_spec, base_vars = run.spec, run.variables
  context = common.determinants(config, base_spec, base_vars)
  method = pipeline.PruneOptions(
    config.criterion, config.least_squares, config.ridge, config.stats_mode,
    config.samples_per_image, config.centred, config.bn_batches,
    config.target, config.refit,
  )  # fmt: skip
  later = [os.path.join(workdir, o) for o in (*OUTPUTS, "report.json")]
  # The head and the allocation first: the group steps' plans follow them.
  early = []
  if config.head:
    early.append(rundir.step_in(os.path.join(workdir, "head"), "head", context))
  if config.budget:
    early.append(
      rundir.step_in(
        os.path.join(workdir, "allocation"), "allocation",
        {**context, "budget": config.budget, "metric": config.budget_metric,
         "groups": checked.names},
      )
    )  # fmt: skip
  restart = config.restart_from
  rest = [os.path.join(workdir, d) for d in ("steps", "final")]
  if any(s.name == restart for s in early) or restart == "start":
    rundir.check_steps(early, restart, later=rest + later)
    restart = ""
  else:
    rundir.check_steps(early)
  for step in early:  # Recorded before their work, checked on a rerun.
    rundir.claim_step(step.fingerprint, step.determinants)
  allocation = None
  if config.budget:
    allocation = rundir.read_json(
      os.path.join(workdir, "allocation", "allocation.json")
    )
  plans = _plans(config, checked, allocation)
  final_det = {
    **procedure.step_determinants(context, plans, len(plans) - 1, method,
                                 config.seed),
    "final": common.final_determinants(config),
  }  # fmt: skip
  steps = [
    rundir.step_in(
      procedure.step_dir(workdir, i, p),
      p.name,
      procedure.step_determinants(context, plans, i, method, config.seed),
    )
    for i, p in enumerate(plans)
  ] + [rundir.step_in(os.path.join(workdir, "final"), "final", final_det)]
  rundir.check_steps(steps, restart, later=later)

  done = common.finished_report(workdir, OUTPUTS)
  if done is not None:
    print(f"{workdir} holds a finished run of this config; its result:")
    _summarise(done, workdir)
    return

  evaluate = lambda spec, variables: train.evaluate(  # noqa: E731
    spec, variables, run.eval_data()
  )
  baseline = evaluate(base_spec, base_vars)
  print(f"baseline {config.model}: accuracy {baseline['accuracy']:.4f}")
  batches = common.stats_batches(config)
  teacher = None
  features = config.distill_features
  notes = []
  if features > 0 and nets.of(base_spec).features is None:
    notes.append(
      f"feature-map distillation off: {nets.of(base_spec).name} does not "
      "name its feature maps (logits distillation only; "
      f"config.distill_features={features} not applied)"
    )
    print(notes[-1])
    features = 0.0
  if config.distill_weight > 0 or features > 0:
    teacher = train.Teacher(  # Distil from the unpruned model.
      base_spec, base_vars, config.distill_temperature,
      config.distill_weight, features,
    )  # fmt: skip

  def finetune(spec, variables, step_dir, epochs, lr, desc, step):
    ft = config.copy_and_resolve_references()
    ft.num_epochs, ft.learning_rate = epochs, lr
    ft.schedule, ft.warmup_epochs = "constant", 0.0
    # Fresh batches for every step (seed + 1 + step); the procedure
    # evaluates after each step itself.
    variables, _ = common.fit(
      run, variables, step_dir, desc, spec, ft, config.seed + 1 + step,
      eval_data=False, teacher=teacher,
    )  # fmt: skip
    return variables

  start_spec, start_vars, head = base_spec, base_vars, None
  if config.head:  # ThiNet-GAP / Tiny: the new head first, then the groups.
    start_spec, start_vars, head = _replace_head(
      config, workdir, base_spec, base_vars, batches, finetune, evaluate
    )
  if config.budget and allocation is None:
    allocation = _allocate(
      config, workdir, start_spec, start_vars, checked.names, batches, method
    )
    plans = _plans(config, checked, allocation)
  on_step = _step_printer(plans, clock)
  spec, variables, records = procedure.run_procedure(
    start_spec, start_vars, plans,
    stats_batches=lambda i: batches(config.seed + i),
    finetune=finetune, evaluate=evaluate, workdir=workdir,
    image_size=config.image_size, seed=config.seed, options=method,
    context=context, on_step=on_step,
  )  # fmt: skip
  before_final = evaluate(spec, variables)
  final_dir = os.path.join(workdir, "final")
  rundir.claim_step(os.path.join(final_dir, rundir.FINGERPRINT), final_det)
  variables, history = common.fit(
    run, variables, final_dir, "final fine-tune", spec,
    data_seed=config.seed + 1 + len(plans), teacher=teacher,
  )  # fmt: skip
  final = history[-1] if history else evaluate(spec, variables)
  train.save_model(
    os.path.join(workdir, "model"), spec, variables, config.image_size
  )
  wall = clock.tick()
  result = report.procedure_report(
    base_spec, spec, config.image_size, baseline, records, before_final,
    final, config.to_dict(), wall["total_s"], jax.devices(),
  )  # fmt: skip
  result["wall"] = wall
  result["final_history"] = history  # One eval per final fine-tune epoch.
  if notes:  # What the run did not do as configured, and why.
    result["notes"] = notes
    result["config"]["distill_features"] = 0.0
  if allocation is not None:
    result["allocation"] = allocation
  if head is not None:
    result["head"] = head
  if sharding.is_main_process():
    report.write(workdir, result)
  _summarise(result, workdir)


def _plans(config, checked: Checked, allocation) -> list[procedure.GroupPlan]:
  return procedure.plan(
    checked.spec, checked.names, checked.ratios, config.finetune_epochs,
    config.finetune_lr, config.stage_end_epochs,
    keep_counts=allocation and allocation["counts"],
  )  # fmt: skip


def _step_printer(plans, clock):
  """One line per group as it finishes: i/n, widths, error, accuracies,
  elapsed, and an ETA for the remaining groups (from this invocation's
  pace; the final fine-tune's own bar gives its ETA)."""
  timed = []  # Seconds of this invocation's groups that did work.
  last = [clock.summary()["last_s"]]

  def on_step(i, record, resumed):
    now = clock.summary()["last_s"]
    if not resumed:
      timed.append(now - last[0])
    last[0] = now
    left = len(plans) - i - 1
    eta = (
      f", groups ETA {minutes(left * sum(timed) / len(timed))}"
      if timed and left
      else ""
    )
    how = "resumed" if resumed else "done"
    tuned = record.get("accuracy_finetuned")
    tuned = "" if tuned is None else f", {tuned:.4f} fine-tuned"
    print(
      f"group {i + 1}/{len(plans)} {record['group']} {how}: "
      f"{record['width_before']} -> {record['width_after']} channels, "
      f"rel. error {record['relative_error']:.4f}, accuracy "
      f"{record['accuracy_pruned']:.4f} pruned{tuned} "
      f"[{minutes(clock.summary()['total_s'])} elapsed{eta}]",
      flush=True,
    )
    clock.tick()

  return on_step


def _summarise(result, workdir):
  print(report.markdown_table(result))
  b, p = result["baseline"], result["pruned"]
  print(
    f"{result['config']['criterion']}: accuracy {b['accuracy']:.4f} -> "
    f"{p['accuracy']:.4f}, FLOPs {b['flops'] / p['flops']:.2f}x fewer; "
    f"report: {workdir}/report.md, model: {workdir}/model"
  )


def _replace_head(config, workdir, spec, variables, batches, finetune,
                  evaluate):  # fmt: skip
  """`config.head` "gap": the fc head replaced by global average pooling
  and a least-squares classifier (`surgery.gap_head`), then fine-tuned for
  `head_finetune_epochs`. Stored under <workdir>/head, so a resumed run
  reuses it. Returns (spec, variables, what it measured)."""
  head_dir = os.path.join(workdir, "head")
  done = rundir.read_json(os.path.join(head_dir, "head.json"))
  if done is not None:
    spec, variables, _ = train.load_model(os.path.join(head_dir, "model"))
    return spec, variables, done
  spec, variables, info = surgery.gap_head(
    spec, variables, batches(config.seed)
  )
  info["head"] = config.head
  count = profile.count(spec, config.image_size)
  info |= {k: count[k] for k in ("params", "flops")}
  info["accuracy_least_squares"] = evaluate(spec, variables)["accuracy"]
  print(
    f"gap head: logits fit to {info['relative_error']:.4f} relative error "
    f"on {info['images']} images; accuracy {info['accuracy_least_squares']:.4f}"
  )
  # Data seed config.seed: the group steps use seed + 1 + step.
  variables = finetune(
    spec, variables, os.path.join(head_dir, "finetune"),
    config.head_finetune_epochs, config.finetune_lr, "fine-tune gap head", -1,
  )  # fmt: skip
  info["accuracy"] = evaluate(spec, variables)["accuracy"]
  print(f"gap head: accuracy {info['accuracy']:.4f} after its fine-tune")
  # The model first, head.json last: head.json means the head is done.
  train.save_model(
    os.path.join(head_dir, "model"), spec, variables, config.image_size
  )
  common.write_json(os.path.join(head_dir, "head.json"), info)
  return spec, variables, info


def _allocate(config, workdir, model, variables, names, batches, method):
  """Keep counts for `config.budget` from every group's error curve on
  the unpruned model, under the run's own options (criterion, least
  squares, centred fit, target) and each step's keys, so a curve is the
  fit that group's step performs from these statistics
  (`depgraph.allocation`, for presets and any model alike); stored in
  <workdir>/allocation, so a resumed run reuses it."""
  traced = factories.graph_of(model, config.image_size)
  reference = (traced, variables) if method.target == "original" else None
  per_group, keys = {}, {}
  for i, name in enumerate(names):  # the keys and batches of the steps
    step_key = jax.random.fold_in(jax.random.key(config.seed), i)
    stats_key, keys[name] = jax.random.split(step_key)
    per_group[name] = depgraph.collect(
      traced, variables, traced.group(name), batches(config.seed + i),
      mode=method.mode, key=stats_key,
      samples_per_image=method.samples_per_image, reference=reference,
      progress=True,
    )  # fmt: skip
  example = factories.example(model, config.image_size)
  counts, curves = depgraph.allocation(
    traced, variables, per_group, config.budget, example,
    metric=config.budget_metric, options=method, keys=keys,
  )  # fmt: skip
  result = {
    "target": config.budget, "metric": config.budget_metric,
    "counts": counts,
    "predicted_errors": {n: float(curves[n][c - 1]) for n, c in counts.items()},
  }  # fmt: skip
  common.write_json(
    os.path.join(workdir, "allocation", "allocation.json"), result
  )
  print(f"allocation for {config.budget_metric} x{config.budget}: {counts}")
  return result


if __name__ == "__main__":
  common.run(main)

"""`normguard` command line: `normguard train --config run.yaml [--key value ...]`.

Every config key is also a flag (`normguard_weight` -> `--normguard-weight`); flags override the file.
Rewards: repeatable `--reward NAME[=WEIGHT]`, their weight files in `--reward-path NAME PATH` (paths are
never parsed out of a packed string: they may hold ':' or ','). Under `torchrun` or `accelerate launch`
the same command trains data-parallel.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from .config import KEY_ALIASES, METHODS, TrainConfig
from .settings import describe, key_types, spec

# flags that are not spelled like their config key (old key names stay accepted as flags too)
ALIASES = {"iterations": ["--steps"], "prompts_file": ["--prompts"], "eval_prompts_file": ["--eval-prompts"]}
for _old, _new in KEY_ALIASES.items():
    ALIASES.setdefault(_new, []).append(f"--{_old.replace('_', '-')}")
SKIP = {"prompts", "rewards", "eval_prompts", "monitor_rewards"}  # list-valued keys with their own flags


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig key, with the help, choices and range its declaration gives."""
    group = parser.add_argument_group("config keys (override the --config file)")
    for name, kind in key_types(TrainConfig).items():
        if name in SKIP:
            continue
        s = spec(TrainConfig, name)
        names = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        text = s.help if kind.base not in (int, float) else f"{s.help} ({describe(TrainConfig, name)})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        if kind.base is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
        elif kind.is_list:
            group.add_argument(*names, nargs="+", type=kind.base, metavar=name.upper(), **kw)
        else:
            metavar = (
                None if s.choices else {int: "N", float: "X"}.get(kind.base, name.split("_")[-1].upper())
            )
            group.add_argument(*names, type=kind.base, choices=s.choices, metavar=metavar, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normguard",
        description="Reward fine-tuning of flow-matching image "
        "models with the NormGuard velocity-norm penalty.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="RL LoRA training (resumes an existing run in --out)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--config", help="YAML file of config keys")
    t.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]", help="a reward (repeatable)")
    t.add_argument(
        "--reward-path",
        action="append",
        nargs=2,
        metavar=("NAME", "PATH"),
        default=[],
        help="weights on disk for a reward (repeatable)",
    )
    t.add_argument(
        "--reward-option",
        action="append",
        nargs=3,
        metavar=("NAME", "KEY", "VALUE"),
        default=[],
        help="a reward-specific option, e.g. --reward-option aesthetic head /models/head.pth (repeatable)",
    )
    t.add_argument(
        "--monitor-reward",
        action="append",
        metavar="NAME",
        default=[],
        help="a reward scored at evaluations but never trained on (repeatable)",
    )
    t.add_argument("--new-run", action="store_true", help="start over in a new subfolder of --out")
    t.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_config_flags(t)
    sub.add_parser("rewards", help="list the available rewards")
    d = sub.add_parser(
        "demo",
        help="train the builtin model with and without NormGuard and write a report (minutes on a CPU)",
        description="Two LoRA trainings of the shipped TinyFlow model, identical but for the NormGuard "
        "penalty, on a reward that invites velocity-norm inflation; then both LoRAs and the base model "
        "are compared on fixed prompts and noise. Writes OUT/report.md with plots (docs/demo.md). "
        "Running it again re-uses finished runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    dflt = _demo_defaults()
    d.add_argument("--out", default="runs/demo", help="folder for both runs, their LoRAs and report.md")
    d.add_argument("--iterations", type=int, default=dflt.iterations, help="RL iterations per run")
    d.add_argument("--reward", default=dflt.reward, help="reward id to train on (e.g. contrast, centring)")
    d.add_argument("--method", choices=METHODS, default=dflt.method, help="RL method")
    d.add_argument("--seed", type=int, default=dflt.seed, help="seed of both runs")
    d.add_argument(
        "--samples", type=int, default=dflt.final_samples, help="images per model in the final comparison"
    )
    d.add_argument("--jobs", type=int, default=2, choices=[1, 2], help="worker processes (one per run)")
    return parser


def _demo_defaults():
    from .demo import DemoSettings

    return DemoSettings()


def parse_reward(text: str) -> dict[str, Any]:
    name, sep, weight = text.partition("=")
    if not name:
        raise ValueError(f"--reward {text!r}: expected NAME or NAME=WEIGHT")
    try:
        return {"name": name, "weight": float(weight) if sep else 1.0}
    except ValueError:
        raise ValueError(f"--reward {text!r}: the weight after '=' must be a number") from None


def _scalar(text: str) -> int | float | str:
    """A number where the text is one, else the text itself (paths stay strings)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    raw = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    raw.update({f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    if args.reward:
        raw["rewards"] = [parse_reward(r) for r in args.reward]
    if args.monitor_reward:
        raw["monitor_rewards"] = [{"name": n} for n in args.monitor_reward]
    specs = {
        key: [r if isinstance(r, dict) else {"name": r} for r in raw.get(key, [])]
        for key in ("rewards", "monitor_rewards")
    }
    for name, path in args.reward_path:
        match = [r for group in specs.values() for r in group if r["name"] == name]
        if not match:
            raise ValueError(f"--reward-path {name}: no reward named {name!r} (add --reward {name})")
        for r in match:
            r["path"] = path
    for name, key, value in args.reward_option:
        match = [r for group in specs.values() for r in group if r["name"] == name]
        if not match:
            raise ValueError(f"--reward-option {name}: no reward named {name!r} (add --reward {name})")
        for r in match:
            r.setdefault("options", {})[key] = _scalar(value)
    raw |= specs
    return TrainConfig.from_dict(raw)


def cmd_train(args: argparse.Namespace) -> int:
    from .callbacks import TqdmProgress
    from .checkpoint import RunDirError
    from .loop import train

    try:
        cfg = resolve_config(args)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        result = train(cfg, callbacks=[TqdmProgress()], new_run=args.new_run)
    except (ValueError, FileNotFoundError, RunDirError) as e:
        print(f"normguard: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a lost mount: every finished checkpoint is kept
        print(
            f"normguard: error: {e}\nThe run keeps its last finished checkpoint; fix the cause and run the same "
            "command again to resume.",
            file=sys.stderr,
        )
        return 1
    if result.lora_path is not None:
        print(
            f"LoRA: {result.lora_path}\nrun: {result.run_dir} ({result.iterations} iterations, {result.status})"
        )
    return 0 if result.status == "finished" else 1


def cmd_rewards(args: argparse.Namespace) -> int:
    from .rewards import available_rewards

    for r in available_rewards():
        need = "needs --reward-path" if r["needs_path"] else "needs nothing on disk"
        extra = f", pip extra [{r['extra']}]" if r.get("extra") else ""
        print(f"{r['id']:24} {r['description']} ({need}{extra}; {r['cost']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoint import RunDirError
    from .demo import DemoSettings, run_demo, settings_with

    settings = settings_with(
        DemoSettings(),
        iterations=args.iterations,
        reward=args.reward,
        method=args.method,
        seed=args.seed,
        final_samples=args.samples,
    )
    try:
        report = run_demo(args.out, settings, jobs=args.jobs)
    except (ValueError, FileNotFoundError, RunDirError) as e:
        print(f"normguard: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"train": cmd_train, "rewards": cmd_rewards, "demo": cmd_demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

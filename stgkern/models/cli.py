"""``stgkern train`` and ``stgkern evaluate``: the session models on a benchmark split."""
from __future__ import annotations

import json
import sys

FORMATS = ("diginetica",)
MODELS = ("srgnn", "gcegnn")


def add_train_arguments(p):
    p.add_argument("--data", required=True, help="folder of the split (diginetica: train_sessions.txt.gz, test.txt.gz)")
    p.add_argument("--format", choices=FORMATS, default="diginetica", help="layout of --data")
    p.add_argument("--model", choices=MODELS, default="srgnn",
                   help="srgnn (Wu et al., AAAI 2019) or gcegnn (Wang et al., SIGIR 2020)")
    p.add_argument("--epochs", type=int, default=30, help="most epochs (the best validation epoch is kept)")
    p.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a validation gain")
    p.add_argument("--batch-size", type=int, default=100, help="training prefixes per optimiser step")
    p.add_argument("--hidden", type=int, default=100, help="embedding and state width")
    p.add_argument("--hops", type=int, default=2, help="gcegnn: depth of the global neighbour tree "
                   "(published n_iter: 2 for Diginetica)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lr-decay", type=float, default=0.1, help="learning-rate factor every --lr-step epochs")
    p.add_argument("--lr-step", type=int, default=3, help="epochs between learning-rate decays")
    p.add_argument("--l2", type=float, default=1e-5, help="L2 penalty (Adam weight_decay)")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="training sessions held out for validation; 0: train on all of them for --epochs "
                        "epochs and keep the last (the refit after a tuned run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch order")
    p.add_argument("--max-batches", type=int, help="cap batches per epoch (smoke runs)")
    p.add_argument("--checkpoint", help="write the whole training state here after every epoch (written to a "
                   "temporary name, then renamed); with --resume, continue from it")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --checkpoint, bit-identical to an uninterrupted run; every "
                        "setting must match except --epochs and --patience, which may be raised")
    p.add_argument("--save", help="write the trained model here (torch file)")
    p.add_argument("--json", help="write the configuration, the epoch curve and the test figures here")


def add_evaluate_arguments(p):
    p.add_argument("--model-file", required=True, help="a model written by stgkern train --save")
    p.add_argument("--data", required=True, help="folder of the split")
    p.add_argument("--format", choices=FORMATS, default="diginetica")
    p.add_argument("--json", help="write the figures here")


class UserError(Exception):
    """A mistake on the command line: reported in one line, exit code 2."""


def unwritable(path):
    """Why an output file cannot be written at ``path`` (checked before a run starts), or None."""
    import os
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a folder"
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        return f"cannot write into {folder}"
    return None


def _check_paths(args):
    import os
    if not os.path.isdir(args.data):
        raise UserError(f"--data {args.data} is not a folder")
    for flag in ("save", "json", "checkpoint"):
        path = getattr(args, flag, None)
        why = unwritable(path) if path else None
        if why:
            raise UserError(f"--{flag} {path}: {why}")


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("the session models need PyTorch: pip install 'stgkern[torch]'") from None


def _load(args):
    from ..data import load_diginetica
    try:
        return load_diginetica(args.data)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _table(curve, stream=sys.stdout):
    head = f"{'epoch':>5} {'loss':>8} {'valid P@20':>11} {'valid MRR@20':>13} {'test P@20':>10} {'test MRR@20':>12} {'train s':>8}"
    print(head, file=stream)
    print("-" * len(head), file=stream)
    nan = float("nan")
    for r in curve:
        t, v = r.get("test", {}), r.get("valid") or {}
        print(f"{r['epoch']:>5} {r['loss']:8.4f} {v.get('P@20', nan):11.2f} {v.get('MRR@20', nan):13.2f} "
              f"{t.get('P@20', float('nan')):10.2f} {t.get('MRR@20', float('nan')):12.2f} {r['train_seconds']:8.0f}",
              file=stream)


def build_model(name, data, hidden=100, valid_fraction=0.1, split_seed=0, seed=0, hops=2):
    """A freshly initialised published model for ``data`` (seeded).  GCE-GNN's global graph is
    built from the training sessions :func:`fit` will train on (the validation sessions held out)."""
    import torch

    from . import GCEGNN, SRGNN, global_neighbors, split_validation
    torch.manual_seed(seed)
    if name == "srgnn":
        return SRGNN(data.n_items, hidden_size=hidden)
    (tp, ti), _ = split_validation(data.train_ptr, data.train_items, valid_fraction, split_seed)
    nb = global_neighbors(tp, ti, data.n_items, seed=seed)
    torch.manual_seed(seed)
    return GCEGNN(data.n_items, nb, hidden_size=hidden, hops=hops)


def train(args):
    import os
    for name in ("epochs", "batch_size", "hidden", "lr_step", "hops"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.max_batches is not None and args.max_batches < 1:
        raise UserError(f"--max-batches must be at least 1, got {args.max_batches}")
    if not 0 <= args.valid_fraction < 1:
        raise UserError(f"--valid-fraction must be in [0, 1), got {args.valid_fraction}")
    if args.resume and not args.checkpoint:
        raise UserError("--resume continues the run saved in --checkpoint: give --checkpoint PATH")
    if args.resume and not os.path.isfile(args.checkpoint):
        raise UserError(f"--resume: no checkpoint at {args.checkpoint}")
    _check_paths(args)
    _torch()
    from . import fit, save
    from .._workers import keep_freed_memory
    from .train import CheckpointError
    keep_freed_memory()
    data = _load(args)
    print(f"{data!r}", file=sys.stderr)
    model = build_model(args.model, data, hidden=args.hidden, valid_fraction=args.valid_fraction, seed=args.seed,
                        hops=args.hops)
    try:
        res = fit(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_dc=args.lr_decay,
                  lr_dc_step=args.lr_step, l2=args.l2, patience=args.patience, valid_fraction=args.valid_fraction,
                  seed=args.seed, max_batches=args.max_batches, checkpoint=args.checkpoint, resume=args.resume)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    _table(res.curve)
    how = (f"trained on every training session for {res.best_epoch} epochs" if res.valid is None
           else f"best validation epoch {res.best_epoch}")
    print(f"\n{args.model} on {data.name}: {how}; test P@20 {res.test['P@20']:.2f}, "
          f"MRR@20 {res.test['MRR@20']:.2f} ({res.seconds:.0f} s)")
    if args.save:
        save(model, args.save, res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"data": data.name, **res.to_dict()}, fh, indent=1)
    return res


def evaluate(args):
    import os
    if not os.path.isfile(args.model_file):
        raise UserError(f"--model-file {args.model_file} does not exist")
    _check_paths(args)
    _torch()
    from . import evaluate as ev
    from . import load
    try:
        model, _ = load(args.model_file)
    except Exception as exc:  # not a torch file, or not one of ours
        raise UserError(f"--model-file {args.model_file} is not a model saved by stgkern train: {exc}") from None
    data = _load(args)
    if data.n_items != model.n_items:
        raise UserError(f"the model scores {model.n_items} items but {args.data} has {data.n_items}")
    out = ev(model, data.test_ptr, data.test_items, data.test_target)
    print(f"{data.name}: {len(data.test_target):,} test examples, P@20 {out['P@20']:.2f}, MRR@20 {out['MRR@20']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out

"""A FER classifier made of trained ones: their logits averaged (``arch`` "ensemble"), optionally over the mirror
image too (``flip``), evaluated exactly as tools/train_fer_classifier.py evaluates one net, with its model card.

Why: the teacher recipes trained here underfit FER2013 at the size a CPU can train in a session (single nets
reach 65-67 % on PrivateTest); two nets of different widths and input sizes err on different faces, and the
mean of their logits, read on the face and its mirror image, is the cheapest way past that. The teacher runs
inside the emotion loss on a few faces per step, so four small forward passes instead of one cost little.

    python tools/make_fer_ensemble.py --name fer-teacher-vgg --role teacher --flip \\
        --members RUN_A/best.safetensors RUN_B/best.safetensors --cache CACHE --out-dir OUT

Members: shipped names or .safetensors files written by tools/train_fer_classifier.py (their recipe metadata
and, when one sits beside the file, their model card are carried into the ensemble's card). The test splits are
read once, after the members were chosen on val; nothing is selected on test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from train_fer_classifier import accuracies, framing_table, load_cache, report, val_sets  # noqa: E402

from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.emotion.classifier import (  # noqa: E402
    EMOTIONS,
    ClassifierConfig,
    EmotionClassifier,
    build_net,
    load_emotion_classifier,
    save_classifier_weights,
)
from affectsr.emotion.data import resolve_data_root  # noqa: E402
from affectsr.emotion.evaluate import format_report  # noqa: E402
from affectsr.weights import file_sha256  # noqa: E402

SETS = ("fer2013", "ck_plus_48", "taiwanese_tight", "taiwanese_loose")


def build_ensemble(members: list[EmotionClassifier], flip: bool) -> EmotionClassifier:
    """One classifier holding the members' weights unchanged."""
    configs = tuple(m.config for m in members)
    config = ClassifierConfig(arch="ensemble", input_size=max(c.input_size for c in configs), members=configs,
                              flip=flip, bn_eps=configs[0].bn_eps)
    net = build_net(config)
    for body, m in zip(net.members, members):
        body.load_state_dict(m.net.state_dict())
    return EmotionClassifier(net, name="ensemble").eval()


def accuracy_table(clf: EmotionClassifier, data: dict, splits=("val", "test")) -> dict[str, dict[str, float]]:
    """split -> set -> single-view accuracy through the wrapper (train_fer_classifier's ``accuracies`` per split)."""
    return {split: accuracies(clf, val_sets(data, split)) for split in splits}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="weights name, e.g. fer-teacher-vgg")
    ap.add_argument("--role", choices=("teacher", "judge", "candidate"), default="candidate")
    ap.add_argument("--members", nargs="+", required=True, help="classifier names or .safetensors files")
    ap.add_argument("--flip", action="store_true", help="also read the mirror image (the shipped wrapper does it)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--cache", type=Path, default=REPO / ".data" / "cache" / "fer_classifier")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-only", action="store_true",
                    help="print the val accuracies of the members and the ensemble and stop (choosing members reads no test)")
    args = ap.parse_args(argv)
    if len(args.members) < 2 and not args.flip:
        ap.error("one member without --flip is the member itself")
    torch.set_num_threads(args.threads)
    root = resolve_data_root(args.data_root)
    data = load_cache(root, args.cache)
    members = [load_emotion_classifier(m) for m in args.members]
    if any(m.labels != EMOTIONS for m in members):
        raise SystemExit("every member must use the label order " + ", ".join(EMOTIONS))

    splits = ("val",) if args.val_only else ("val", "test")
    rows = []  # each member alone, then the ensemble without and with flip: val and test, single view
    for m, src in zip(members, args.members):
        rows.append((f"member `{Path(src).name}`", accuracy_table(m, data, splits)))
    plain = build_ensemble(members, flip=False)
    rows.append(("ensemble, no flip", accuracy_table(plain, data, splits)))
    clf = build_ensemble(members, flip=args.flip)
    if args.flip:
        rows.append(("ensemble + mirror image (shipped)", accuracy_table(clf, data, splits)))
    if args.val_only:
        for name, acc in rows:
            print(f"{name}: " + ", ".join(f"val {k} {v:.2%}" for k, v in acc["val"].items()), flush=True)
        return 0
    reports = {s: report(clf, val_sets(data, s), s) for s in ("val", "test")}
    framing = framing_table(clf, data)

    sources = []
    for m, src in zip(members, args.members):
        path = Path(src) if Path(src).suffix == ".safetensors" else REPO / "affectsr" / "weights" / f"{src}.safetensors"
        recipe = json.loads(m.metadata.get("recipe", "{}"))
        sources.append({"file": path.name, "sha256": file_sha256(path), "arch": m.config.arch, "input_size": m.config.input_size,
                        "widths": list(m.config.widths), "seed": recipe.get("seed"), "recipe": recipe,
                        "card": path.with_suffix(".md") if path.with_suffix(".md").is_file() else None})
    test_acc = {r.dataset: round(r.accuracy, 6) for r in reports["test"]}
    meta = {"source": "ensemble of classifiers trained here from scratch (tools/make_fer_ensemble.py)",
            "role": args.role, "labels": json.dumps(list(EMOTIONS)),
            "recipe": json.dumps({"members": [{k: v for k, v in s.items() if k != "card"} for s in sources],
                                  "seed": [s["seed"] for s in sources], "flip": args.flip}, default=str),
            "licence": "weights derived from FER2013, CK+ and taiwanese_expr: non-commercial research use only",
            "test_accuracy": json.dumps(test_acc)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = save_classifier_weights(clf.net, args.out_dir / f"{args.name}.safetensors", meta)
    text = card(args, clf, sources, rows, reports, framing)
    atomic_write(args.out_dir / f"{args.name}.md", lambda tmp: Path(tmp).write_text(text))
    for name, acc in rows:
        print(f"{name}: " + ", ".join(f"{s} {k} {v:.2%}" for s, d in acc.items() for k, v in d.items()), flush=True)
    print(f"wrote {out} and its card", flush=True)
    return 0


def card(args: argparse.Namespace, clf: EmotionClassifier, sources: list[dict], rows: list, reports: dict,
         framing: list[dict]) -> str:
    members = "\n".join(f"| {i} | `{s['file']}` | {s['arch']} | {s['widths']} | {s['input_size']} | {s['seed']} | "
                        f"`{s['sha256'][:16]}` |" for i, s in enumerate(sources))
    acc = "\n".join(f"| {name} | " + " | ".join(f"{a['val'][k]:.2%} / {a['test'][k]:.2%}" for k in SETS) + " |"
                    for name, a in rows)
    frame_rows = "\n".join(f"| {r['split']} | {r['framing']} | {r['input']} | {r['n']} | {r['accuracy']:.2%} |" for r in framing)
    params = sum(p.numel() for p in clf.parameters())
    role = {"teacher": "the **teacher**: the classifier training losses (EmotionConsistencyLoss) may use",
            "judge": "the **judge**: an independent classifier for measuring SR output; no training loss may use it",
            "candidate": "a candidate (not shipped)"}[args.role]
    appendix = []
    for i, s in enumerate(sources):
        if s["card"] is not None:
            body = Path(s["card"]).read_text().strip().splitlines()
            appendix += [f"## Member {i}: its own model card ({s['file']})", ""]
            appendix += [("#" + line if line.startswith("#") else line) for line in body[1:]] + [""]
        else:
            appendix += [f"## Member {i} ({s['file']}): recipe", "", "```", json.dumps(s["recipe"], indent=1), "```", ""]
    cmd = ("python tools/make_fer_ensemble.py --name " + args.name + " --role " + args.role
           + (" --flip" if args.flip else "") + " --members " + " ".join(Path(m).name for m in args.members))
    return f"""# {args.name}: facial-expression classifier (ensemble of {len(sources)} nets trained here from scratch)

Written by `{cmd}` on {dt.date.today().isoformat()} ({platform.platform()}, torch {torch.__version__}, CPU only).

## What it is
Role: {role}.
`affectsr.emotion.load_emotion_classifier("{args.name}")`: RGB or grey in [0, 1], any size -> `(logits, features)` in one
differentiable pass. Each member reads the face as it was trained to (BT.601 luma, antialiased resize to its input size,
`(x - 0.5) * 2`); the logits are the members' mean{", averaged with the same on the mirror image" if args.flip else ""};
`features` are the members' last maps, flattened and concatenated (what the emotion loss's feature term compares).
Architecture `ensemble` (`affectsr/emotion/classifier.py`, `EnsembleNet`), {params / 1e6:.2f} M parameters in all.
Labels, in this order: {", ".join(EMOTIONS)}.

| member | file | arch | widths | input px | seed | sha256 |
|---:|---|---|---|---:|---:|---|
{members}

## Licence and data terms
- Code: MIT (this repository). Source: trained here, not converted from anyone's weights (members' cards below).
- Training images: FER2013, CK+ and taiwanese_expr train splits (members' cards); **non-commercial research only**.

## Accuracy (val / test; fer2013 val = PublicTest, test = PrivateTest)
Every row through the whole wrapper. The members were trained and selected on val; test was read once here.

| reader | fer2013 | ck_plus_48 | taiwanese tight | taiwanese loose |
|---|---:|---:|---:|---:|
{acc}

### Framing and colour (taiwanese_expr, the shipped wrapper)
| split | framing | input | n | accuracy |
|---|---|---|---:|---:|
{frame_rows}

### Test confusion matrices (the shipped wrapper)
{format_report(reports["test"])}

### Val confusion matrices (the shipped wrapper)
{format_report(reports["val"])}

{chr(10).join(appendix)}
"""


if __name__ == "__main__":
    sys.exit(main())

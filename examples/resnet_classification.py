"""ResNet image classification: AdamW vs SING on a KerasHub (or KerasCV) ResNet.

The SING paper reports better ImageNet/CIFAR accuracy for ResNets trained with
SING. This example trains a randomly initialized KerasHub `ResNetBackbone`
with a classification head:

    python examples/resnet_classification.py --compare                  # CIFAR-100 if downloadable
    python examples/resnet_classification.py --data digits --compare    # offline, real data
    python examples/resnet_classification.py --depth 50 --data cifar100 --epochs 100   # on a GPU
    python examples/resnet_classification.py --backbone kerascv --smoke # KerasCV (needs TensorFlow)

Data:
- `cifar100` (default): `keras.datasets.cifar100`, downloaded on first use.
  Without a network it says so and falls back to `digits`.
- `digits`: scikit-learn's 8x8 handwritten digits (they ship inside the
  scikit-learn wheel: 1,797 real images, 10 classes), upsampled to 32x32x3.
- `synthetic`: generated class-conditional colour patterns (a sanity check).
"""

from _common import apply_defaults
from _common import base_parser
from _common import compile_and_fit
from _common import print_table
from _common import write_outputs

# keras after _common, which sets the backend
# isort: split
import keras
import numpy as np

DEPTHS = {
    # depth: (block_type, stackwise_num_blocks, stackwise_num_filters)
    "tiny": ("basic_block", [1, 1], [64, 64]),
    "18": ("basic_block", [2, 2, 2, 2], [64, 128, 256, 512]),
    "34": ("basic_block", [3, 4, 6, 3], [64, 128, 256, 512]),
    "50": ("bottleneck_block", [3, 4, 6, 3], [64, 128, 256, 512]),
}


def load_data(name, seed, max_train=None):
    """`((x_train, y_train), (x_test, y_test), num_classes, source)`."""
    if name == "cifar100":
        try:
            (x, y), (xt, yt) = keras.datasets.cifar100.load_data()
            x, xt = x.astype("float32") / 255.0, xt.astype("float32") / 255.0
            return _cap((x, y.ravel()), max_train), (xt, yt.ravel()), 100, "CIFAR-100"
        except Exception as error:  # no network: say so, use real offline data
            print(f"CIFAR-100 could not be downloaded ({type(error).__name__}: {str(error)[:80]}...). "
                  "Falling back to scikit-learn's digits (--data digits).")
            name = "digits"
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype("float32") / 16.0  # (n, 8, 8) in [0, 1]
        images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 32x32
        images = np.repeat(images[..., None], 3, axis=-1)
        labels = digits.target.astype("int32")
        order = np.random.default_rng(seed).permutation(len(images))
        images, labels = images[order], labels[order]
        split = int(0.8 * len(images))
        train = _cap((images[:split], labels[:split]), max_train)
        return train, (images[split:], labels[split:]), 10, "scikit-learn digits (upsampled)"
    rng = np.random.default_rng(seed)
    classes = 10
    prototypes = rng.uniform(0, 1, size=(classes, 32, 32, 3)).astype("float32")
    n = max_train or 2000
    labels = rng.integers(0, classes, size=n + 500).astype("int32")
    images = prototypes[labels] + 0.5 * rng.standard_normal((n + 500, 32, 32, 3)).astype("float32")
    return (images[:n], labels[:n]), (images[n:], labels[n:]), classes, "synthetic"


def _cap(data, max_train):
    x, y = data
    return (x[:max_train], y[:max_train]) if max_train else (x, y)


def build_model(backbone_name, depth, num_classes):
    if backbone_name == "kerascv":
        try:
            import keras_cv
        except ImportError as error:
            raise SystemExit(
                "--backbone kerascv needs KerasCV and TensorFlow: "
                "pip install 'keras-sing[kerascv]' (KerasCV is no longer "
                f"maintained; KerasHub is its successor). ({error})"
            ) from None
        # KerasCV's basic blocks need the first stage as wide as its stem (64)
        block_type, blocks, filters = DEPTHS[depth]
        backbone = keras_cv.models.ResNetBackbone(
            stackwise_filters=filters, stackwise_blocks=blocks,
            stackwise_strides=[1] + [2] * (len(filters) - 1),
            include_rescaling=False, input_shape=(32, 32, 3),
            # KerasCV's default "block" is the bottleneck block
            block_type="basic_block" if block_type == "basic_block" else "block",
        )
        x = keras.layers.GlobalAveragePooling2D()(backbone.output)
        return keras.Model(backbone.input, keras.layers.Dense(num_classes)(x), name="kerascv_resnet")
    import keras_hub

    block_type, blocks, filters = DEPTHS[depth]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=filters,
        stackwise_num_blocks=blocks,
        stackwise_num_strides=[1] + [2] * (len(filters) - 1),
        block_type=block_type,
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    # keras_hub.models.ResNetImageClassifier adds the same head; building it
    # as a functional model keeps fit on plain arrays on every backend.
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    return keras.Model(backbone.input, keras.layers.Dense(num_classes, name="logits")(x), name="resnet")


def train(name, args, data, num_classes, total_steps):
    train_data, test_data = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.backbone, args.depth, num_classes)
    return compile_and_fit(name, model, args, train_data, test_data, total_steps, "accuracy", "accuracy")


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0], "runs/resnet_classification", epochs=10, batch_size=64)
    parser.add_argument("--data", choices=["cifar100", "digits", "synthetic"], default="cifar100", help="cifar100 needs a network (offline: digits, with a message)")
    parser.add_argument("--backbone", choices=["kerashub", "kerascv"], default="kerashub", help="kerascv needs KerasCV and TensorFlow")
    parser.add_argument("--depth", choices=sorted(DEPTHS), default="tiny", help="ResNet depth (tiny = 2 basic blocks, for CPU)")
    parser.add_argument("--max-train", type=int, default=None, help="cap on training images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.data = "digits" if args.data == "cifar100" else args.data
        args.max_train, args.epochs, args.depth = 256, args.epochs or 1, "tiny"
    apply_defaults(args, epochs=10, batch_size=64)

    train_data, test_data, num_classes, source = load_data(args.data, args.seed, args.max_train)
    if args.smoke:
        test_data = (test_data[0][:128], test_data[1][:128])
    print(f"data: {source}, {len(train_data[0])} train / {len(test_data[0])} test images, {num_classes} classes")
    total_steps = args.epochs * -(-len(train_data[0]) // args.batch_size)
    names = ["adamw", "sing"] if args.compare else [args.optimizer]
    results = [train(n, args, (train_data, test_data), num_classes, total_steps) for n in names]
    print_table(results, "accuracy")
    write_outputs(args.out, results, "accuracy", {**vars(args), "data_source": source})
    return results


if __name__ == "__main__":
    main()

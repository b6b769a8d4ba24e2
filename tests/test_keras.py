"""axkern.keras: Keras 3 layers against the NumPy API, training, saving, TFApprox scripts."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import axkern
from axkern.quant import fake_quant

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
axk = pytest.importorskip("axkern.keras")

ApproxConv2D, ApproxDense = axk.ApproxConv2D, axk.ApproxDense
ApproxDepthwiseConv2D, FakeApproxConv2D = axk.ApproxDepthwiseConv2D, axk.FakeApproxConv2D

# An unsigned table built in NumPy (no compiler): the product with its low 6 bits dropped.
TRUNC = axkern.Multiplier.from_function(lambda a, b: (a * b) & ~0x3F, name="trunc6")
SIGNED = axkern.Multiplier.from_function(lambda a, b: (a * b) // 4 * 4, signed=True, name="s4")


def _rand(shape, seed=0, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def test_import_axkern_does_not_import_keras():
    code = ("import sys, axkern; axkern.axconv2d; import axkern.nn; "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_keras_names_the_extra():
    code = ("import sys; sys.modules['keras'] = None\n"
            "try:\n    import axkern.keras\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "axkern[keras]"' in out.stdout


# ------------------------------------------------------------------ layers against axconv2d
@pytest.mark.parametrize("kw", [
    dict(padding="same"),
    dict(padding="valid", strides=2),
    dict(padding="same", strides=(2, 1), kernel_size=(4, 2)),
    dict(padding="same", dilation_rate=2),
    dict(padding="valid", groups=2, use_bias=False),
    dict(padding="same", data_format="channels_first"),
])
def test_conv_equals_axconv2d(kw):
    kw = {"kernel_size": 3, **kw}
    x = _rand((2, 9, 10, 4), seed=1, lo=0.0)
    layer = ApproxConv2D(6, multiplier=TRUNC, activation="relu", bias_initializer="glorot_uniform",
                         **kw)
    first = kw.get("data_format") == "channels_first"
    y = layer(x.transpose(0, 3, 1, 2) if first else x).numpy()
    weights = layer.get_weights()
    ref = axkern.axconv2d(x, weights[0], TRUNC, bias=weights[1] if len(weights) > 1 else None,
                          stride=layer.strides, padding=kw["padding"].upper(),
                          dilation=layer.dilation_rate, groups=layer.groups, backend="reference")
    ref = np.maximum(ref, 0)
    if first:
        ref = ref.transpose(0, 3, 1, 2)
    assert y.shape == ref.shape == tuple(layer.compute_output_shape(y.shape[:1] + (
        (4, 9, 10) if first else (9, 10, 4))))
    np.testing.assert_array_equal(y, ref)


def test_signed_tuned_per_channel_conv_equals_axconv2d():
    x = _rand((2, 8, 8, 3), seed=2)
    layer = ApproxConv2D(5, 3, padding="same", multiplier=SIGNED, quant="symmetric-per-channel",
                         tune=True)
    y = layer(x).numpy()
    k, b = layer.get_weights()
    ref = axkern.axconv2d(x, k, SIGNED, bias=b, padding="SAME", quant="symmetric-per-channel",
                          tune=True, backend="reference")
    np.testing.assert_array_equal(y, ref)


def test_depthwise_and_dense_equal_numpy_api():
    x = _rand((2, 7, 7, 3), seed=3, lo=0.0)
    dw = ApproxDepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", multiplier=TRUNC,
                               bias_initializer="glorot_uniform")
    y = dw(x).numpy()
    k, b = dw.get_weights()
    ref = axkern.axconv2d(x, k.reshape(3, 3, 1, 6), TRUNC, bias=b, stride=2, padding="SAME",
                          groups=3, backend="reference")
    np.testing.assert_array_equal(y, ref)
    # Keras' float layer orders the outputs the same way (c * depth_multiplier + j)
    fl = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")
    fl.build(x.shape)
    fl.set_weights([k, b])
    assert np.abs(fl(x).numpy() - y).max() < 0.05 * np.abs(y).max()

    xd = _rand((2, 3, 12), seed=4)
    dense = ApproxDense(4, multiplier=TRUNC, activation="tanh", bias_initializer="glorot_uniform")
    yd = dense(xd).numpy()
    kd, bd = dense.get_weights()
    np.testing.assert_array_equal(
        yd, keras.activations.tanh(axkern.axdense(xd, kd, TRUNC, bd, backend="reference")).numpy())  # TF's tanh
    assert yd.shape == (2, 3, 4)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding="same"),
                                dict(kernel_size=4, strides=2, padding="same"),
                                dict(kernel_size=2, strides=2, padding="valid")])
def test_exact_multiplier_close_to_keras_float_layer(kw):
    """With the exact product the layer is the float convolution of the fake-quantized input
    and filter (TFApprox ranges), and close to Keras' own float Conv2D (the padding split
    included: a different split would shift whole rows)."""
    x = _rand((2, 9, 9, 3), seed=5)
    layer = ApproxConv2D(4, multiplier=axkern.Multiplier.exact(8), **kw)
    y = layer(x).numpy()
    ref = keras.layers.Conv2D(4, **kw)
    ref.build(x.shape)
    k, b = layer.get_weights()
    ref.set_weights([k, b])
    yf = ref(x).numpy()
    fq = ref.convolution_op(fake_quant(x, x.min(), x.max()), fake_quant(k, k.min(), k.max()))
    np.testing.assert_allclose(y, fq.numpy() + b, rtol=1e-5, atol=1e-5)
    err = np.abs(y - yf).max()
    assert 0 < err < 0.02 * np.abs(yf).max()


# ------------------------------------------------------------------ training
def test_fit_reduces_loss_and_updates_every_weight():
    rng = np.random.default_rng(6)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        ApproxConv2D(4, 3, padding="same", activation="relu", multiplier=TRUNC),
        ApproxDepthwiseConv2D(3, strides=2, padding="same", activation="relu", multiplier=TRUNC),
        keras.layers.Flatten(),
        ApproxDense(2, multiplier=TRUNC),
    ])
    with pytest.warns(UserWarning, match="jit_compile"):   # XLA refused: a host call inside
        model.compile(optimizer=keras.optimizers.Adam(0.02), jit_compile=True,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    loss0 = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=16, verbose=0, shuffle=False)
    loss1 = model.evaluate(x, y, verbose=0)
    assert loss1 < 0.9 * loss0
    assert len(before) == 6
    for w0, w1 in zip(before, model.get_weights()):
        assert not np.array_equal(w0, w1)
    assert model.jit_compile is False


def test_straight_through_gradient_is_float_gradient_at_fake_quantized_operands():
    x = tf.constant(_rand((2, 6, 6, 2), seed=7))
    layer = ApproxConv2D(3, 3, padding="same", multiplier=TRUNC, quant="asymmetric")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out = layer(x)
        loss = tf.reduce_sum(out * out)
    gx, gk, gb = tape.gradient(loss, [x, layer.kernel, layer.bias])
    dy = 2 * out
    k = layer.kernel.numpy()
    xq = tf.constant(fake_quant(x.numpy()))
    kq = tf.constant(fake_quant(k))
    with tf.GradientTape() as t2:
        t2.watch([xq, kq])
        yf = tf.nn.conv2d(xq, kq, 1, "SAME")
    rx, rk = t2.gradient(yf, [xq, kq], output_gradients=dy)
    np.testing.assert_allclose(gx.numpy(), rx.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gk.numpy(), rk.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb.numpy(), dy.numpy().sum(axis=(0, 1, 2)), rtol=1e-5)


# ------------------------------------------------------------------ saving
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "t.bin"
    TRUNC.to_bin(path)
    inp = keras.Input((8, 8, 2))
    h = FakeApproxConv2D(4, 3, padding="same", activation="relu", mul_map_file=str(path))(inp)
    h = ApproxDepthwiseConv2D(3, padding="same", multiplier="mul8u_trunc4")(h)
    h = ApproxConv2D(4, 1, multiplier=SIGNED, tune=True)(h)
    out = ApproxDense(3, multiplier=TRUNC.table)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    x = _rand((3, 8, 8, 2), seed=8)
    y = model(x).numpy()
    conf = model.layers[2].get_config()["multiplier"]
    assert conf == {"name": "mul8u_trunc4", "signed": False}
    model.save(tmp_path / "m.keras")
    path.unlink()   # the table travels in the saved config
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [type(layer).__name__ for layer in loaded.layers][1:4] == [
        "FakeApproxConv2D", "ApproxDepthwiseConv2D", "ApproxConv2D"]
    np.testing.assert_array_equal(loaded.layers[3].multiplier.table, SIGNED.table)
    assert loaded.layers[3].multiplier.signed and loaded.layers[3].tune is True
    np.testing.assert_array_equal(loaded(x).numpy(), y)


# ------------------------------------------------------------------ a TFApprox-style script
# TFApprox's example as Keras 3 needs it (pool_size given; the float weights kept in a legacy
# HDF5 file, which Keras 3 loads by layer order as TensorFlow 2.1's checkpoints were, where
# its .weights.h5 files address layers by class name): the only change for axkern is the
# import line of FakeApproxConv2D.
TFAPPROX_SCRIPT = """
import numpy as np
import tensorflow as tf
from axkern.keras import FakeApproxConv2D

rng = np.random.default_rng(0)
x_train = rng.random((64, 14, 14, 1), dtype=np.float32)
y_train = (x_train[:, :7].sum(axis=(1, 2, 3)) > x_train[:, 7:].sum(axis=(1, 2, 3))).astype(int)

model = tf.keras.Sequential([
    tf.keras.layers.Input((14, 14, 1)),
    tf.keras.layers.Conv2D(filters=6, kernel_size=(3, 3), activation='relu'),
    tf.keras.layers.AveragePooling2D(pool_size=(2, 2)),
    tf.keras.layers.Conv2D(filters=16, kernel_size=(3, 3), activation='relu'),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(32, activation='relu'),
    tf.keras.layers.Dense(2, activation='softmax')
])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.fit(x_train, y_train, epochs=1, verbose=0)
model.save('lenet5.h5')

approx_model = tf.keras.Sequential([
    tf.keras.layers.Input((14, 14, 1)),
    FakeApproxConv2D(filters=6, kernel_size=(3, 3), activation='relu', mul_map_file=mtab_file),
    tf.keras.layers.AveragePooling2D(pool_size=(2, 2)),
    FakeApproxConv2D(filters=16, kernel_size=(3, 3), activation='relu', mul_map_file=mtab_file),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(32, activation='relu'),
    tf.keras.layers.Dense(2, activation='softmax')
])
approx_model.load_weights('lenet5.h5')
approx_model.compile(loss='sparse_categorical_crossentropy', metrics=['accuracy'])
loss, accuracy = approx_model.evaluate(x_train, y_train, verbose=0)
"""


def test_tfapprox_style_script_runs_and_equals_axconv2d(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = axkern.load_multiplier("mul8u_drum4")
    m.to_bin("mul8u_drum4.bin")
    ns = {"mtab_file": "mul8u_drum4.bin"}
    exec(compile(textwrap.dedent(TFAPPROX_SCRIPT), "tfapprox_script", "exec"), ns)
    model, approx = ns["model"], ns["approx_model"]
    x = ns["x_train"][:16]
    assert 0 <= ns["accuracy"] <= 1
    # every layer's output next to its input
    probe = keras.Model(approx.inputs, [layer.output for layer in approx.layers])
    outs = [o.numpy() for o in probe(x)]
    inputs = [x] + outs[:-1]
    for i in (0, 2):
        k, b = model.layers[i].get_weights()   # the float model's trained weights
        ref = np.maximum(axkern.axconv2d(inputs[i], k, m, bias=b, padding="VALID",
                                         quant="tfapprox", backend="reference"), 0)
        np.testing.assert_array_equal(outs[i], ref)
    np.testing.assert_array_equal(approx.predict(x, verbose=0), outs[-1])
    # mul_map_file left out: TFApprox's exact 8x8-bit product
    exact = FakeApproxConv2D(filters=2, kernel_size=(3, 3))
    y = exact(x).numpy()
    k, b = exact.get_weights()
    np.testing.assert_array_equal(y, axkern.axconv2d(x, k, axkern.Multiplier.exact(8), bias=b,
                                                     padding="VALID", quant="tfapprox", backend="reference"))


# ------------------------------------------------------------------ approximate(model)
def _residual_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    d = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = keras.layers.Add()([h, d])
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, name="fc")(h)
    model = keras.Model(inp, out)
    model.get_layer("bn").set_weights([_rand((4,), seed=s, lo=0.5, hi=1.5) for s in range(4)])
    return model


def test_approximate_functional_model():
    model = _residual_model()
    x = _rand((2, 8, 8, 3), seed=9, lo=0.0)
    y_float = model(x).numpy()
    ax = axk.approximate(model, TRUNC)
    assert [type(ax.get_layer(n)).__name__ for n in ("conv1", "dw", "fc")] == [
        "ApproxConv2D", "ApproxDepthwiseConv2D", "ApproxDense"]
    assert type(model.get_layer("conv1")) is keras.layers.Conv2D   # original untouched
    for a, b in zip(model.get_weights(), ax.get_weights()):
        np.testing.assert_array_equal(a, b)
    probe = keras.Model(ax.inputs, [ax.get_layer(n).output for n in ("conv1", "dw", "fc")]
                        + [ax.get_layer(n).input for n in ("dw", "fc")])
    c1, dw, fc, dw_in, fc_in = [t.numpy() for t in probe(x)]
    k, b = model.get_layer("conv1").get_weights()
    np.testing.assert_array_equal(c1, axkern.axconv2d(x, k, TRUNC, bias=b, padding="SAME", backend="reference"))
    k, b = model.get_layer("dw").get_weights()
    np.testing.assert_array_equal(dw, np.maximum(axkern.axconv2d(
        dw_in, k.reshape(3, 3, 1, 4), TRUNC, bias=b, padding="SAME", groups=4, backend="reference"), 0))
    k, b = model.get_layer("fc").get_weights()
    np.testing.assert_array_equal(fc, axkern.axdense(fc_in, k, TRUNC, b, backend="reference"))
    assert not np.array_equal(ax(x).numpy(), y_float)

    # a mapping: None keeps float, unnamed layers stay float; skip
    part = axk.approximate(model, {"dw": TRUNC, "fc": None})
    assert [type(part.get_layer(n)).__name__ for n in ("conv1", "dw", "fc")] == [
        "Conv2D", "ApproxDepthwiseConv2D", "Dense"]
    part = axk.approximate(model, "mul8u_trunc4", skip=["fc"], quant="asymmetric")
    assert type(part.get_layer("fc")) is keras.layers.Dense
    assert part.get_layer("dw").get_config()["multiplier"]["name"] == "mul8u_trunc4"
    assert part.get_layer("conv1").quant == "asymmetric"

    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="d")])
    axs = axk.approximate(seq, TRUNC)
    assert isinstance(axs, keras.Sequential) and type(axs.layers[0]) is ApproxDense


def test_approximate_bad_input():
    model = _residual_model()
    with pytest.raises(ValueError, match=r"'conv9'.*\['conv1', 'dw', 'fc'\]"):
        axk.approximate(model, {"conv9": TRUNC})
    with pytest.raises(ValueError, match=r"skip names 'bn'.*\['conv1', 'dw', 'fc'\]"):
        axk.approximate(model, TRUNC, skip=["bn"])
    with pytest.raises(TypeError, match="keras.Sequential or functional"):
        axk.approximate("model.keras", TRUNC)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(TypeError, match="subclassed"):
        axk.approximate(Sub(), TRUNC)
    with pytest.raises(ValueError, match="layer 'conv1': .*unsigned"):
        axk.approximate(model, TRUNC, quant="symmetric")
    with pytest.raises(ValueError, match="unknown quant"):
        axk.approximate(model, TRUNC, quant="int8")


# ------------------------------------------------------------------ bad input
def test_layer_bad_input(tmp_path):
    with pytest.raises(ValueError, match="padding 'causal' cannot be honored"):
        ApproxConv2D(2, 3, padding="causal", multiplier=TRUNC)
    with pytest.raises(ValueError, match="padding 'causal' cannot be honored"):
        FakeApproxConv2D(2, 3, 1, "causal")          # positional, as Conv2D takes them
    with pytest.raises(ValueError, match="Unrecognized keyword arguments.*pading"):
        ApproxConv2D(2, 3, pading="same", multiplier=TRUNC)
    with pytest.raises(ValueError, match="padding 'full' cannot be honored"):
        ApproxDepthwiseConv2D(3, padding="full", multiplier=TRUNC)
    with pytest.raises(ValueError, match="activation 'relu7' cannot be honored"):
        ApproxConv2D(2, 3, activation="relu7", multiplier=TRUNC)
    with pytest.raises(ValueError, match="activation 42 cannot be honored"):
        ApproxDense(2, activation=42, multiplier=TRUNC)
    with pytest.raises(ValueError, match="multiplier is required"):
        ApproxDense(2, multiplier=None)
    with pytest.raises(TypeError, match="multiplier must be"):
        ApproxDense(2, multiplier=3.5)
    with pytest.raises(ValueError, match="unknown quant 'int8'"):
        ApproxDense(2, multiplier=TRUNC, quant="int8")
    with pytest.raises(ValueError, match="unsigned"):
        ApproxConv2D(2, 3, multiplier=SIGNED, quant="tfapprox")
    with pytest.raises(ValueError, match="mul8u_trunk4"):
        ApproxConv2D(2, 3, multiplier="mul8u_trunk4")
    with pytest.raises(ValueError, match="quantization_config does not apply"):
        ApproxDense(2, multiplier=TRUNC, quantization_config=object())
    with pytest.raises(ValueError, match="must be a TFApprox .bin"):
        FakeApproxConv2D(2, 3, mul_map_file="table.txt")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        FakeApproxConv2D(2, 3, mul_map_file=str(tmp_path / "missing.bin"))
    (tmp_path / "short.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="100 bytes"):
        FakeApproxConv2D(2, 3, mul_map_file=str(tmp_path / "short.bin"))
    with pytest.raises(ValueError, match="mul_map_file or multiplier, not both"):
        FakeApproxConv2D(2, 3, mul_map_file="a.bin", multiplier=TRUNC)
    dense = ApproxDense(2, multiplier=TRUNC, name="nan_dense")
    dense.build((None, 3))
    with pytest.raises(NotImplementedError, match="quantize"):
        dense.quantize("int8")
    x = np.ones((1, 3), np.float32)
    x[0, 1] = np.nan
    # eagerly the host call's ValueError itself, in a graph TensorFlow's error carrying it
    with pytest.raises(ValueError, match="layer 'nan_dense' .ApproxDense.: x contains NaN"):
        dense(x)
    model = keras.Sequential([keras.Input((3,)), dense])
    with pytest.raises(tf.errors.InvalidArgumentError, match="nan_dense.*NaN"):
        model.predict(x, verbose=0)


# ------------------------------------------------------------------ the survey's model protocol
def test_survey_model_protocol():
    import pickle

    from axkern.survey import MODEL_PROTOCOL, evaluate

    model = _residual_model()
    x = _rand((12, 8, 8, 3), seed=10, lo=0.0)
    y = np.random.default_rng(11).integers(0, 3, 12)
    sm = axk.as_survey_model(model)
    assert all(hasattr(sm, a) for a in MODEL_PROTOCOL)
    assert sm.compute_layers == ["conv1", "dw", "fc"]
    assert sm.settings()["dw"] == (None, "auto", False)
    np.testing.assert_array_equal(sm.forward(x), model(x, training=False).numpy())
    assert sm.accuracy(x, y) == np.mean(np.argmax(model(x).numpy(), -1) == y)

    sm.configure(["dw", "fc"], multiplier=TRUNC, tune=True)
    ref = axk.approximate(model, {"dw": TRUNC, "fc": TRUNC}, tune=True)
    np.testing.assert_array_equal(sm.forward(x), ref(x).numpy())
    np.testing.assert_array_equal(sm.forward(x, batch_size=5),
                                  np.concatenate([ref(x[i:i + 5]).numpy() for i in (0, 5, 10)]))
    twin = pickle.loads(pickle.dumps(sm.copy()))     # spawned survey workers get it this way
    assert twin.settings() == sm.settings() == {
        "conv1": (None, "auto", False), "dw": ("trunc6", "auto", True), "fc": ("trunc6", "auto", True)}
    np.testing.assert_array_equal(twin.forward(x), ref(x).numpy())
    twin.configure(multiplier=None)
    np.testing.assert_array_equal(sm.forward(x), ref(x).numpy())   # the copy is independent

    with pytest.raises(ValueError, match=r"'conv7'.*\['conv1', 'dw', 'fc'\]"):
        sm.configure(["conv7"], multiplier=TRUNC)
    sm.configure(multiplier=SIGNED, quant="tfapprox")
    with pytest.raises(ValueError, match="layer 'conv1': .*unsigned"):
        sm.accuracy(x, y)

    res = evaluate(model, TRUNC, data=(x, y))      # survey._load_model takes a keras.Model
    ref = axk.approximate(model, TRUNC)
    assert res["accuracy"] == 100.0 * np.mean(np.argmax(ref(x).numpy(), -1) == y)


def _macs_model():
    inp = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw")(y)
    y = keras.layers.Conv2D(6, 1, groups=2, name="pw")(y)
    y = keras.layers.Reshape((4, 24))(y)
    y = keras.layers.Dense(5, name="dense3d")(y)   # a rank-3 input: 4 rows of 24
    y = keras.layers.Flatten()(y)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(y))


# per sample, by hand: output elements x reduction length
MACS_BY_HAND = {"stem": (8 * 8 * 8) * (3 * 3 * 1), "dw": (4 * 4 * 16) * (3 * 3),
                "pw": (4 * 4 * 6) * (1 * 1 * 8), "dense3d": (4 * 5) * 24, "head": 10 * 20}


def test_survey_model_layer_macs_by_hand():
    sm = axk.as_survey_model(_macs_model())
    assert sm.layer_macs((8, 8, 1)) == MACS_BY_HAND
    sm.configure(multiplier=TRUNC)   # the settings stay; the probe runs Keras' float ops
    assert sm.layer_macs((8, 8, 1)) == MACS_BY_HAND
    assert sm.settings()["stem"][0] == "trunc6"
    with pytest.raises(ValueError):
        sm.layer_macs((9, 9, 1))   # not the model's input shape


def test_signed_table_array_warns_as_in_the_numpy_api():
    # a table array is read as unsigned (keras.md); one that a signed reading fits far better
    # gets the SignednessWarning that axdense gives (a table of this test's own, so that no
    # earlier call has warned for it already)
    from axkern.lut import SignednessWarning

    t = axkern.load_multiplier("mul8s_exact").table.copy()
    t[3, 5] += 1
    with pytest.warns(SignednessWarning, match="signed") as rec:
        layer = axk.ApproxDense(4, multiplier=t)
    assert not layer.multiplier.signed
    # pointing at the line that passed the table, not into axkern
    assert [r.filename for r in rec if r.category is SignednessWarning] == [__file__]


def test_survey_model_counts_shared_layers_and_scores_the_first_output():
    from axkern.survey import evaluate

    inp = keras.Input((8, 8, 4))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    h = keras.layers.Flatten()(shared(shared(inp)))   # one layer, called twice
    main = keras.layers.Dense(3, name="main")(h)
    aux = keras.layers.Dense(3, name="aux")(h)
    model = keras.Model(inp, [main, aux])
    sm = axk.as_survey_model(model)
    assert sm.layer_macs((8, 8, 4)) == {"shared": 2 * (8 * 8 * 4) * (3 * 3 * 4),
                                        "main": 3 * 256, "aux": 3 * 256}
    # scored on the main head (the first output), not on both heads stacked together
    x = _rand((40, 8, 8, 4), seed=3)
    m_out, a_out = (o.numpy() for o in model(x, training=False))
    y = m_out.argmax(-1)
    assert np.mean(a_out.argmax(-1) == y) < 0.9   # the heads disagree: the test can tell
    np.testing.assert_array_equal(sm.forward(x), m_out)
    assert sm.accuracy(x, y) == 1.0
    assert evaluate(model, None, data=(x, y))["accuracy"] == 100.0


def test_search_on_a_keras_model_counts_its_macs(tmp_path):
    pytest.importorskip("pymoo", reason='the search needs pymoo: pip install "axkern[search]"')
    pytest.importorskip("distributed", reason='the search needs dask: pip install "axkern[search]"')
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images[:60, :, :, None] / 16.0).astype(np.float32), d.target[:60]
    r = axkern.search(model=_macs_model(), data=(x, y),
                      multipliers=["mul8u_exact", "mul8u_trunc8"], population=4, generations=1,
                      seed=1, workers=1, output=str(tmp_path), progress=False, plot=False,
                      verbose=False)
    assert r["layers"] == list(MACS_BY_HAND) and r["macs"] == MACS_BY_HAND

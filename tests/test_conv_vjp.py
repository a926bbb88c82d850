"""The CPU weight gradient of `conv_cpu.conv_general_dilated` against jax's own, and its dispatch."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_l2
from jax import lax

from diff2lip_jax import xla_flags
from diff2lip_jax.models import conv_cpu
from diff2lip_jax.models.layers import conv

# float32 rounding: the row blocks only reorder dW's sum (observed ~4e-7).
RTOL = 1e-5

# (batch, spatial, kernel, stride, in, out): every conv shape the models build, plus the
# cases that take other branches (batch >= 4: no blocks; rows that do not split; stride 2).
CONFIGS = [
    (1, (16, 16), 3, 1, 4, 8),  # 3x3 SAME, cut into 4 row blocks
    (2, (16, 16), 3, 1, 4, 8),  # 2 blocks
    (5, (8, 8), 3, 1, 4, 8),  # batch >= 4: no blocks
    (1, (16, 16), 1, 1, 8, 4),  # 1x1 (skip connections)
    (1, (16, 16), 3, 2, 4, 8),  # strided 3x3 (Downsample with use_conv)
    (1, (64, 16), 3, (2, 1), 1, 8),  # the audio encoder's (2, 1) downsample
    (1, (7, 6), 3, 1, 4, 8),  # 7 rows: no even split
    (1, (16,), 3, 1, 80, 8),  # conv1d k3 (audio input block)
    (2, (12,), 1, 1, 8, 24),  # conv1d 1x1 (attention qkv / proj_out)
    (1, (4, 4), 3, 1, 64, 48),  # large kernel, few pixels: dx by matmul
    (2, (4,), 3, 1, 40, 64),  # the same in 1-D
]


@pytest.fixture(autouse=True)
def eigen_convolutions(monkeypatch):
    """XLA_FLAGS as a CPU run has them (read when tracing): convolutions on Eigen, so the blocks are used."""
    flags = xla_flags.CPU_FLAGS[xla_flags.YNN_FUSION_FLAG]
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} --{xla_flags.YNN_FUSION_FLAG}={flags}")
    monkeypatch.delenv(conv_cpu.ENV, raising=False)


def _conv_pair(features, kernel, stride, ndim):
    ours = conv(features, kernel, jnp.float32, "c", stride=stride, ndim=ndim)
    stock = ours.clone(conv_general_dilated=None)  # flax's default: lax.conv_general_dilated
    return ours, stock


@pytest.mark.parametrize("batch,spatial,kernel,stride,cin,cout", CONFIGS)
def test_gradients_equal_jax_default(batch, spatial, kernel, stride, cin, cout, rng):
    ndim = len(spatial)
    ours, stock = _conv_pair(cout, kernel, stride, ndim)
    x = jnp.asarray(rng.standard_normal((batch, *spatial, cin)), jnp.float32)
    params = stock.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)

    def run(module):
        y, vjp = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
        return y, vjp

    y_ref, vjp_ref = run(stock)
    y, vjp = run(ours)
    g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    (dp_ref, dx_ref), (dp, dx) = vjp_ref(g), vjp(g)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))  # forward is lax's own
    assert rel_l2(dx, dx_ref) <= RTOL
    assert rel_l2(dp["kernel"], dp_ref["kernel"]) <= RTOL
    assert rel_l2(dp["bias"], dp_ref["bias"]) <= RTOL


def test_unhandled_configurations_are_lax(rng):
    """Dilation and feature groups go to lax untouched (its gradient included)."""
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    for kw in (dict(feature_group_count=2), dict(rhs_dilation=(2, 2))):
        rhs = w if "feature_group_count" in kw else jnp.concatenate([w, w], axis=2)
        a = conv_cpu.conv_general_dilated(x, rhs, (1, 1), "SAME", dimension_numbers=dn, **kw)
        b = lax.conv_general_dilated(x, rhs, (1, 1), "SAME", dimension_numbers=dn, **kw)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _grad_mlir(platform: str) -> str:
    """The StableHLO of d(sum conv)/dW lowered for one platform (no device of it needed)."""
    x = jnp.zeros((1, 16, 16, 4), jnp.float32)
    w = jnp.zeros((3, 3, 4, 8), jnp.float32)

    def f(x, w):
        y = conv_cpu.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=conv_cpu._channels_last(2))
        return jnp.sum(y)

    exported = jax.export.export(jax.jit(jax.grad(f, argnums=1)), platforms=[platform])(x, w)
    return exported.mlir_module()


def test_cpu_lowering_takes_the_blocked_path():
    # 16 rows, batch 1 -> 4 blocks of 4 output rows, each reading 6 padded rows of 18 columns.
    assert conv_cpu.row_blocks(1, 16) == 4
    assert "tensor<4x6x18x4xf32>" in _grad_mlir("cpu")


def test_gpu_and_tpu_lowering_keep_xla_gradient():
    for platform in ("cuda", "tpu"):
        assert "tensor<4x6x18x4xf32>" not in _grad_mlir(platform)


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(conv_cpu.ENV, "0")
    assert "tensor<4x6x18x4xf32>" not in _grad_mlir("cpu")


def test_off_while_ynnpack_runs_convolutions(monkeypatch):
    """With jaxlib's default flags (convolutions on YNNPACK) the blocks would be slower: not used."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert not conv_cpu.enabled()
    assert "tensor<4x6x18x4xf32>" not in _grad_mlir("cpu")


def test_params_layout_unchanged(rng):
    """The conv factory's params are nn.Conv's: same names and shapes with or without the custom conv."""
    ours, stock = _conv_pair(8, 3, 1, 2)
    x = jnp.zeros((1, 8, 8, 4), jnp.float32)
    shapes = lambda m: jax.tree.map(jnp.shape, m.init(jax.random.key(0), x))
    assert shapes(ours) == shapes(stock)
    assert isinstance(ours, nn.Conv)


@pytest.mark.parametrize(
    "x_shape,w_shape,strides,expected",
    [
        ((1, 4, 4, 64), (3, 3, 64, 48), (1, 1), True),
        ((2, 4, 40), (3, 40, 64), (1,), True),
        ((1, 8, 8, 1024), (3, 3, 1024, 512), (1, 1), True),  # official UNet, 8x8
        ((1, 32, 32, 512), (3, 3, 512, 256), (1, 1), False),  # 32x32: XLA's dx is faster
        ((1, 16, 16, 4), (3, 3, 4, 8), (1, 1), False),
        ((1, 4, 4, 64), (1, 1, 64, 48), (1, 1), False),  # 1x1: no taps to sum
        ((1, 4, 4, 64), (3, 3, 64, 48), (2, 2), False),  # strided
    ],
)
def test_dx_by_matmul_selection(x_shape, w_shape, strides, expected):
    """Which convs take the matmul input gradient (CONFIGS above checks its values)."""
    padding = tuple((k // 2, k // 2) for k in w_shape[:-2])
    assert conv_cpu.dx_by_matmul_pays(x_shape, w_shape, strides, padding) is expected

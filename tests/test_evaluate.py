"""Evaluation: PSNR/SSIM vs. skimage, the Fréchet distance vs. direct scipy math, the FID
Inception and syncnet_python ports vs. hand-written PyTorch references (random weights,
.pth round trips), the LSE protocol on synthetic talking faces with a transparent scorer,
LMD math, mouth r against the synthetic ground truth, the baseline rows against direct
scores of the sources, and the filelist evaluation (JSON, table, CLI) on a toy run."""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil

import numpy as np
import pytest
import scipy.linalg
from helpers import finish, one_line_error, rel_l2, start_module
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diff2lip_jax.evaluate import fid as fid_lib
from diff2lip_jax.evaluate import lmd, lse, metrics, mouth, run
from diff2lip_jax.evaluate import syncnet_python as sp
from diff2lip_jax.face import make_detector

torch = pytest.importorskip("torch")
tnn, F = torch.nn, torch.nn.functional

RTOL = 1e-4  # relative L2 for a float32 network port (shared/reference/README.md)


# --------------------------------------------------------------------------- PSNR, SSIM


def test_psnr_identical_is_inf_and_known_noise_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(10, 246, (3, 32, 40, 3), dtype=np.uint8)
    assert np.all(np.isinf(metrics.psnr(a, a)))
    noise = rng.choice(np.array([-3, 3], np.int16), a.shape) * (np.arange(3)[:, None, None, None] + 1)
    b = (a.astype(np.int16) + noise).astype(np.uint8)  # |noise| = 3, 6, 9 per frame: MSE 9, 36, 81
    got = metrics.psnr(a, b)
    np.testing.assert_allclose(got, 10 * np.log10(255.0**2 / np.array([9.0, 36.0, 81.0])), rtol=1e-12)
    np.testing.assert_allclose(got, [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])


@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_skimage(gaussian):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    got = metrics.ssim(a, b, gaussian=gaussian)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    want = [structural_similarity(x, y, channel_axis=-1, data_range=255, **kw) for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(metrics.ssim(a, a, gaussian=gaussian), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        metrics.ssim(a, b[:, :20])


# --------------------------------------------------------------------------- Fréchet distance


def _random_gaussian(rng, d):
    m = rng.standard_normal((d, d))
    return rng.standard_normal(d), m @ m.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_direct_scipy_computation():
    rng = np.random.default_rng(2)
    for d in (4, 32, 64):
        (mu1, s1), (mu2, s2) = _random_gaussian(rng, d), _random_gaussian(rng, d)
        root1 = scipy.linalg.sqrtm(s1).real  # direct: tr (S1^1/2 S2 S1^1/2)^1/2, symmetric throughout
        direct = (
            np.sum((mu1 - mu2) ** 2)
            + np.trace(s1)
            + np.trace(s2)
            - 2 * np.trace(scipy.linalg.sqrtm(root1 @ s2 @ root1).real)
        )
        assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-6)
        assert metrics.frechet_distance_spectral(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-6)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    a, b = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    want = 4.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(np.zeros(8), np.diag(a), np.full(8, 0.5 * math.sqrt(2)), np.diag(b)) == (
        pytest.approx(want, rel=1e-9)
    )


def test_fid_from_features_methods_agree_including_gram_route():
    rng = np.random.default_rng(3)
    f1 = rng.standard_normal((40, 24)) @ rng.standard_normal((24, 24))
    f2 = rng.standard_normal((50, 24)) + 0.3
    ref = metrics.fid_from_features(f1, f2, "sqrtm")
    assert metrics.fid_from_features(f1, f2, "spectral") == pytest.approx(ref, rel=1e-6)
    g1, g2 = rng.standard_normal((12, 64)), rng.standard_normal((9, 64)) + 0.2  # N < D: the cross-Gram route
    assert metrics.fid_from_features(g1, g2, "spectral") == pytest.approx(
        metrics.fid_from_features(g1, g2, "sqrtm"), rel=1e-6
    )
    assert abs(metrics.fid_from_features(g1, g1, "spectral")) < 1e-9
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.fid_from_features(g1[:1], g2)


# --------------------------------------------------------------------------- FID Inception


def _torch_fid_inception() -> tnn.Module:
    """pytorch-fid's FID Inception (torchvision inception_v3 + FIDInceptionA/C/E_1/E_2), written out."""

    class B(tnn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv, self.bn = tnn.Conv2d(cin, cout, bias=False, **kw), tnn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    class A(tnn.Module):
        def __init__(self, cin, pf):
            super().__init__()
            self.branch1x1 = B(cin, 64, kernel_size=1)
            self.branch5x5_1, self.branch5x5_2 = B(cin, 48, kernel_size=1), B(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = B(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = B(96, 96, kernel_size=3, padding=1)
            self.branch_pool = B(cin, pf, kernel_size=1)

        def forward(self, x):
            return torch.cat(
                [
                    self.branch1x1(x),
                    self.branch5x5_2(self.branch5x5_1(x)),
                    self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                    self.branch_pool(avg(x)),
                ],
                1,
            )

    class Bb(tnn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = B(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = B(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = B(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), d, F.max_pool2d(x, 3, 2)], 1)

    class C(tnn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            self.branch1x1 = B(cin, 192, kernel_size=1)
            self.branch7x7_1 = B(cin, c7, kernel_size=1)
            self.branch7x7_2 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = B(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = B(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = B(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = B(cin, 192, kernel_size=1)

        def forward(self, x):
            s = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for i in range(1, 6):
                d = getattr(self, f"branch7x7dbl_{i}")(d)
            return torch.cat([self.branch1x1(x), s, d, self.branch_pool(avg(x))], 1)

    class D(tnn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1, self.branch3x3_2 = B(cin, 192, kernel_size=1), B(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = B(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = B(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = B(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = B(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            s = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), s, F.max_pool2d(x, 3, 2)], 1)

    class E(tnn.Module):
        def __init__(self, cin, max_pool):
            super().__init__()
            self.max_pool = max_pool
            self.branch1x1 = B(cin, 320, kernel_size=1)
            self.branch3x3_1 = B(cin, 384, kernel_size=1)
            self.branch3x3_2a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = B(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = B(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = B(cin, 192, kernel_size=1)

        def forward(self, x):
            s = self.branch3x3_1(x)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else avg(x)
            return torch.cat(
                [
                    self.branch1x1(x),
                    self.branch3x3_2a(s),
                    self.branch3x3_2b(s),
                    self.branch3x3dbl_3a(d),
                    self.branch3x3dbl_3b(d),
                    self.branch_pool(pooled),
                ],
                1,
            )

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = B(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = B(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = B(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = B(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = B(80, 192, kernel_size=3)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
            self.Mixed_6a = Bb(288)
            self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
            self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = D(768), E(1280, False), E(2048, True)
            self.fc = tnn.Linear(2048, 1008)

        def forward(self, images_01):  # pytorch-fid InceptionV3: resize, 2x-1, blocks 0-3
            x = 2 * F.interpolate(images_01, size=(299, 299), mode="bilinear", align_corners=False) - 1
            x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return x.mean(dim=(2, 3))

    return Net().eval()


@pytest.fixture(scope="module")
def random_inception() -> fid_lib.InceptionFeatures:
    """The ``--fid_weights=random`` network, batch 4 (one compile shared by the tests below)."""
    return fid_lib.InceptionFeatures.from_weights("random", batch_size=4)


def test_inception_keys_and_pth_roundtrip(tmp_path):
    ref_keys = [k for k in _torch_fid_inception().state_dict() if not k.endswith("num_batches_tracked")]
    shapes = fid_lib.state_dict_shapes()
    assert list(shapes) == ref_keys  # names and torch order, generated from the Flax module
    assert sum(math.prod(s) for k, s in shapes.items() if "running" not in k) == 23_850_960  # 1008-class fc
    sd = fid_lib.random_state_dict(seed=5)
    path = tmp_path / fid_lib.FID_WEIGHTS_FILE
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    v = fid_lib.load_inception(path)
    np.testing.assert_array_equal(
        v["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
        sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        v["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"], sd["Mixed_7c.branch_pool.bn.running_var"]
    )
    with pytest.raises(ValueError, match="missing"):
        fid_lib.variables_from_state_dict({k: v for k, v in sd.items() if "Mixed_5b" not in k})
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        fid_lib.load_inception(tmp_path / "nope.pth")


def test_inception_matches_pytorch_reference_and_fid_of_identical_sets_is_zero(random_inception):
    net = _torch_fid_inception()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in fid_lib.random_state_dict().items()})
    images = np.random.default_rng(4).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    with torch.no_grad():
        want = net(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0).numpy()
    got = random_inception(images)
    assert got.shape == (3, 2048)
    assert rel_l2(got, want) < RTOL
    assert abs(metrics.fid_from_features(got, got, "spectral")) < 1e-3
    assert metrics.fid_from_features(got, random_inception(images[:, ::-1]), "spectral") > 1e-3


# --------------------------------------------------------------------------- syncnet_python


def _torch_syncnet_s(embed: int = 1024) -> tnn.Module:
    """syncnet_python's S, layer list written out (BatchNorm eps 1e-5, eval)."""

    def cbr(conv, bn, cin, cout, **kw):
        return [conv(cin, cout, **kw), bn(cout), tnn.ReLU()]

    c2, b2, c3, b3 = tnn.Conv2d, tnn.BatchNorm2d, tnn.Conv3d, tnn.BatchNorm3d
    s = tnn.Module()
    s.netcnnaud = tnn.Sequential(
        *cbr(c2, b2, 1, 64, kernel_size=3, padding=1),
        tnn.MaxPool2d(1, 1),
        *cbr(c2, b2, 64, 192, kernel_size=3, padding=1),
        tnn.MaxPool2d(3, (1, 2)),
        *cbr(c2, b2, 192, 384, kernel_size=3, padding=1),
        *cbr(c2, b2, 384, 256, kernel_size=3, padding=1),
        *cbr(c2, b2, 256, 256, kernel_size=3, padding=1),
        tnn.MaxPool2d(3, 2),
        *cbr(c2, b2, 256, 512, kernel_size=(5, 4)),
    )
    s.netfcaud = tnn.Sequential(tnn.Linear(512, 512), tnn.BatchNorm1d(512), tnn.ReLU(), tnn.Linear(512, embed))
    s.netfclip = tnn.Sequential(tnn.Linear(512, 512), tnn.BatchNorm1d(512), tnn.ReLU(), tnn.Linear(512, embed))
    s.netcnnlip = tnn.Sequential(
        *cbr(c3, b3, 3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2)),
        tnn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *cbr(c3, b3, 96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        tnn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        *cbr(c3, b3, 256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        *cbr(c3, b3, 256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        *cbr(c3, b3, 256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        tnn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *cbr(c3, b3, 256, 512, kernel_size=(1, 6, 6)),
    )
    return s.eval()


def test_syncnet_python_port_matches_pytorch_reference(tmp_path):
    net = _torch_syncnet_s()
    rng = np.random.default_rng(6)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = v
        elif k.endswith("running_var"):
            sd[k] = torch.from_numpy(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        elif v.ndim > 1:
            sd[k] = torch.from_numpy(
                (rng.standard_normal(v.shape) * np.sqrt(2.0 / np.prod(v.shape[1:]))).astype(np.float32)
            )
        else:
            sd[k] = torch.from_numpy((rng.standard_normal(v.shape) * 0.1).astype(np.float32))
    net.load_state_dict(sd)
    assert sp.state_dict_shapes() == {k: tuple(v.shape) for k, v in sd.items() if "num_batches" not in k}
    path = tmp_path / "syncnet_v2.model"
    torch.save(sd, path)
    module, variables = sp.load_syncnet_python(path)
    faces = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)  # BGR, as cv2 gives it
    mfcc = rng.standard_normal((2, 13, 20)).astype(np.float32)
    lip, aud = module.apply(variables, faces, mfcc)
    with torch.no_grad():
        lip_t = net.netfclip(net.netcnnlip(torch.from_numpy(faces).permute(0, 4, 1, 2, 3)).flatten(1)).numpy()
        aud_t = net.netfcaud(net.netcnnaud(torch.from_numpy(mfcc)[:, None]).flatten(1)).numpy()
    assert lip.shape == (2, 1024) and rel_l2(lip, lip_t) < RTOL and rel_l2(aud, aud_t) < RTOL


def test_mfcc_filterbank_and_frame_count():
    # python_speech_features.get_filterbanks, loop for loop.
    nfilt, nfft, sr = 26, 512, 16000
    hz2mel, mel2hz = (lambda hz: 2595 * np.log10(1 + hz / 700.0)), (lambda m: 700 * (10 ** (m / 2595.0) - 1))
    bins = np.floor((nfft + 1) * mel2hz(np.linspace(hz2mel(0), hz2mel(sr / 2), nfilt + 2)) / sr)
    want = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            want[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            want[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    np.testing.assert_allclose(sp._mel_filterbank(nfilt, nfft, sr), want, rtol=0, atol=1e-15)
    wav = np.random.default_rng(7).uniform(-0.5, 0.5, 16000).astype(np.float32)
    cc = sp.mfcc(sp.int16_scale(wav))
    assert cc.shape == (1 + math.ceil((16000 - 400) / 160), 13)
    x = sp.int16_scale(wav)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    assert cc[0, 0] == pytest.approx(np.log(np.sum(np.abs(np.fft.rfft(x[:400], 512)) ** 2) / 512))
    assert sp.mfcc_windows(wav, np.array([0, 3])).shape == (2, 13, 20)


def test_syncnet_crops_follow_run_pipeline_geometry():
    frames = np.random.default_rng(8).integers(0, 256, (20, 200, 240, 3), dtype=np.uint8)
    boxes = np.tile([80, 60, 140, 120], (20, 1))  # half size 30, centre (110, 90)
    crops = sp.syncnet_crops(frames, boxes)
    assert crops.shape == (20, 224, 224, 3)
    bsi = int(30 * 1.8)
    padded = np.pad(frames[10], ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=110)
    want = padded[int(90 + bsi - 30) : int(90 + bsi + 30 * 1.8), int(110 + bsi - 42) : int(110 + bsi + 42)]
    import cv2

    np.testing.assert_array_equal(crops[10], cv2.resize(want, (224, 224)))


# --------------------------------------------------------------------------- LSE


# MouthEnergyScorer: mouth darkness vs audio level, the transparent scorer of the synthetic faces.
from data_pipelines.synthetic.scorer import MouthEnergyScorer  # noqa: E402


def test_sync_curve_protocol_math():
    f = np.eye(4)[[0, 1, 2, 3, 0, 1]].astype(float)
    a = np.roll(f, 2, axis=0)  # audio_emb[i + 2] == face_emb[i] (rows wrap, but zero padding cuts them)
    res = lse.sync_from_embeddings(f, a, vshift=3)
    assert res.curve.shape == (7,) and res.num_windows == 6
    assert res.offset == -2 and np.argmin(res.curve) == 5  # audio 2 frames late -> offset -2
    d = np.linalg.norm(f - np.concatenate([a[2:], np.zeros((2, 4))]) + 1e-6, axis=1).mean()
    assert res.lse_d == pytest.approx(d) and res.lse_c == pytest.approx(np.median(res.curve) - d)
    assert lse.num_sync_windows(100, 64000) == 95 and lse.num_sync_windows(100, 3000) == -1


def test_lse_aligned_vs_shifted_synthetic_talking_face():
    from data_pipelines.synthetic import synthesize_clip

    clip = synthesize_clip(0, 0, num_identities=2, size=(128, 128), seconds=4.0)
    other = synthesize_clip(0, 3, num_identities=2, size=(128, 128), seconds=4.0)
    boxes = np.round(clip.face_boxes).astype(np.int64)
    scorer, k = MouthEnergyScorer(), 5
    aligned = lse.evaluate_sync(clip.frames, boxes, clip.audio, scorer)
    late = lse.evaluate_sync(
        clip.frames, boxes, np.concatenate([np.zeros(640 * k, np.float32), clip.audio[: -640 * k]]), scorer
    )
    early = lse.evaluate_sync(
        clip.frames, boxes, np.concatenate([clip.audio[640 * k :], np.zeros(640 * k, np.float32)]), scorer
    )
    wrong = lse.evaluate_sync(clip.frames, boxes, other.audio, scorer)
    assert aligned.offset == 0 and late.offset == -k and early.offset == k
    assert aligned.lse_c > late.lse_c and aligned.lse_c > early.lse_c and aligned.lse_c > 2 * wrong.lse_c
    assert aligned.lse_d < wrong.lse_d and late.curve[lse.VSHIFT] > aligned.lse_d + 0.5  # unshifted view is bad
    with pytest.raises(ValueError, match="too short"):
        lse.evaluate_sync(clip.frames[:5], boxes[:5], clip.audio, scorer)


# --------------------------------------------------------------------------- LMD

_TEMPLATE = np.stack([np.linspace(10, 60, 68), np.linspace(20, 90, 68)], axis=1)


def toy_landmarks(frames: np.ndarray) -> np.ndarray:
    """Template landmarks; the mouth shifted right by the frame's mean red value / 10; NaN for black frames."""
    out = np.repeat(_TEMPLATE[None], len(frames), axis=0)
    out[:, 48:68, 0] += frames[..., 0].reshape(len(frames), -1).mean(axis=1)[:, None] / 10.0
    out[frames.reshape(len(frames), -1).max(axis=1) == 0] = np.nan
    return out


def test_mouth_landmark_distance_math():
    src = np.repeat(_TEMPLATE[None], 3, axis=0)
    gen = src.copy()
    gen[:, 48:68] += [3.0, 4.0]
    gen[:, :48] += 100.0  # outside the mouth: ignored
    gen[2] = np.nan
    d = lmd.mouth_landmark_distance(gen, src)
    np.testing.assert_allclose(d[:2], 5.0)
    assert np.isnan(d[2])
    np.testing.assert_allclose(lmd.mouth_landmark_distance(gen, src, center=True)[:2], 0.0, atol=1e-12)
    crops_src = np.full((4, 16, 16, 3), 50, np.uint8)
    crops_gen = np.full((4, 16, 16, 3), 80, np.uint8)
    crops_gen[3] = 0
    assert lmd.landmark_distance(crops_gen, crops_src, toy_landmarks) == (pytest.approx(3.0), 3)
    with pytest.raises(ValueError, match="module:factory"):
        lmd.load_landmark_model("no_colon")


# --------------------------------------------------------------------------- filelist evaluation


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """Two synthetic clips as the dataset; generated = copies of the sources (+ a cross video)."""
    from data_pipelines import synthetic
    from diff2lip_jax.video import read_frames, write_video

    root = tmp_path_factory.mktemp("eval_toy")
    src = root / "src"
    synthetic.generate_dataset(src, num_clips=2, seed=1, size=(128, 128), seconds=1.6, identities=2)
    clips = ["id00000/id00000_clip00000", "id00001/id00001_clip00000"]
    meta = json.loads((src / f"{clips[0]}.json").read_text())
    x1, y1, x2, y2 = np.mean(meta["face_boxes"], axis=0)
    box = (int(y1), int(y2), int(x1), int(x2))
    recon = root / "recon.txt"
    recon.write_text(
        f"# toy\n{clips[0]} {clips[0]}\n\n{clips[1]} {clips[1]}\nid00009/gone id00009/gone\nid00008/bad {clips[0]}\n"
    )
    cross = root / "cross.txt"
    cross.write_text(f"{clips[1]} {clips[0]}\n")
    gen = root / "gen"
    gen.mkdir()
    (gen / run.generated_name(run.Pair("id00008/bad", clips[0], 0))).write_bytes(b"not a video")
    for c in clips:
        shutil.copy(src / f"{c}.mp4", gen / run.generated_name(run.Pair(c, c, 0)))
    # Cross: clip 0's face with clip 1's audio (its lips move with the other voice).
    write_video(
        gen / run.generated_name(run.Pair(clips[1], clips[0], 0)),
        read_frames(src / f"{clips[0]}.mp4"),
        audio_path=src / f"{clips[1]}.wav",
    )
    # The cross pair's "generated" video = the video source untouched, the driving audio
    # muxed in; streams copied, so frames and decoded audio are the sources' to the bit.
    mux = root / "gen_mux"
    mux.mkdir()
    _mux(src / f"{clips[0]}.mp4", src / f"{clips[1]}.mp4", mux / run.generated_name(run.Pair(clips[1], clips[0], 0)))
    own = root / "own.txt"  # the cross pair's audio source scored as a reconstruction of itself
    own.write_text(f"{clips[1]} {clips[1]}\n")
    return dict(root=root, src=src, gen=gen, mux=mux, recon=recon, cross=cross, own=own, box=box, clips=clips)


def _mux(video, audio, out):
    """``out`` = the video stream of ``video`` and the audio stream of ``audio``, both copied."""
    import subprocess

    from diff2lip_jax.video import ffmpeg_command

    cmd = [*ffmpeg_command(), "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c", "copy"]
    subprocess.run([*cmd, str(out)], check=True, capture_output=True)


def test_read_filelist_and_generated_name(tmp_path, toy_data):
    pairs = run.read_filelist(toy_data["recon"])
    assert [(p.audio_source, p.line) for p in pairs] == [
        ("id00000/id00000_clip00000", 2),
        ("id00001/id00001_clip00000", 4),
        ("id00009/gone", 5),
        ("id00008/bad", 6),
    ]
    assert run.generated_name(run.Pair("ABOUT/test/ABOUT_00001", "A/b/c", 1)) == "ABOUT.test.ABOUT_00001_A.b.c.mp4"
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\nonly_one\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        run.read_filelist(bad)
    assert run.dataset_name("voxceleb2_test_n_500_reconstruction.txt") == "VoxCeleb2"


def test_toy_run_reconstruction_and_cross_json_and_table(toy_data, random_inception, tmp_path):
    detector = make_detector("box", box=toy_data["box"])
    common = dict(
        inception=random_inception,
        scorer=MouthEnergyScorer(),
        fid_frame_stride=8,
        fid_method="spectral",
        dataset="Toy",
        method="copy",
    )
    rec = run.evaluate_pairs(
        run.read_filelist(toy_data["recon"]),
        toy_data["gen"],
        toy_data["src"],
        "reconstruction",
        detector,
        landmarks=toy_landmarks,
        **common,
    )
    assert (rec["num_pairs"], rec["num_evaluated"], rec["num_missing"], rec["num_failed"]) == (4, 2, 1, 1)
    assert rec["missing"] == ["id00009.gone_id00009.gone.mp4"]
    assert "not a readable media file" in rec["pairs"][3]["error"]
    m = rec["metrics"]
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0) and m["lmd"] == 0.0
    assert abs(m["fid"]) < 1e-3 and m["fid_frames"] == {"generated": 10, "source": 10}
    ok = [p for p in rec["pairs"] if p["status"] == "ok"]
    assert all(p["av_offset"] == 0 and p["boxes_from"] == "source" for p in ok)
    cross = run.evaluate_pairs(
        run.read_filelist(toy_data["cross"]), toy_data["gen"], toy_data["src"], "cross", detector, **common
    )
    assert set(cross["metrics"]) == {
        "fid",
        "fid_frames",
        "lse_c",
        "lse_d",
        *mouth.MOUTH_KEYS,
        "mouth_pairs",
        "mouth_undefined",
    }
    assert set(cross["not_computed"]) == {"psnr", "ssim", "lmd"}
    assert set(cross["baselines"]) == {"real", "unsynced"} and set(rec["baselines"]) == {"real"}
    # Lips that follow the other clip's voice: less confident, farther.
    assert cross["metrics"]["lse_c"] < m["lse_c"] and cross["metrics"]["lse_d"] > m["lse_d"], (cross, m)
    full = run.evaluate_pairs(
        run.read_filelist(toy_data["recon"])[:1],
        toy_data["gen"],
        toy_data["src"],
        "reconstruction",
        detector,
        metrics_wanted=["psnr", "ssim"],
        on="full",
    )
    assert full["metrics"] == {"psnr": math.inf, "ssim": pytest.approx(1.0)} and full["settings"]["on"] == "full"
    assert full["not_computed"] == {k: "not requested" for k in ("fid", "lmd", "lse", "mouth")}
    assert full["baselines"] == {}  # nothing a baseline computes was asked for
    out = tmp_path / "r.json"
    run.write_json(out, rec)
    back = json.loads(out.read_text())  # strict JSON: inf as a string
    assert back["metrics"]["psnr"] == "inf" and back["pairs"][0]["psnr"] == "inf"
    table = run.render_table([back, run.json_safe(cross)])
    header, _, row, real, unsynced = table.splitlines()[:5]
    assert header.count("|") == 1 + 1 + 7 + 6 and "Toy recon. PSNR↑" in header and "Toy cross LSE-D↓" in header
    assert "Toy recon. mouth r↑" in header and "Toy cross mouth r sync↑" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "copy" and cells[1] == "∞" and cells[2] == "1.000" and len(cells) == 14
    real_cells, unsynced_cells = ([c.strip() for c in r.strip("|").split("|")] for r in (real, unsynced))
    assert real_cells[0] == "real (audio source)" and real_cells[1:5] == ["–"] * 4  # no image metrics
    assert real_cells[5] == f"{rec['baselines']['real']['metrics']['lse_c']:.3f}"
    assert unsynced_cells[0] == "unsynced (video source + driving audio)" and unsynced_cells[1:8] == ["–"] * 7
    assert unsynced_cells[9] == f"{cross['baselines']['unsynced']['metrics']['lse_c']:.3f}"
    assert "ceiling" in table and "floor" in table
    other = json.loads(json.dumps(run.json_safe(cross)))  # another method, other pairs: its own real row
    other["method"] = "other"
    other["baselines"]["real"]["metrics"]["lse_c"] += 1.0
    both = run.render_table([run.json_safe(cross), other])
    assert both.count("| real (audio source) |") == 1 and "| real (audio source) [pairs of other] |" in both
    assert both.count("| unsynced (video source + driving audio) |") == 1  # the same row: shown once
    old = {k: v for k, v in back.items() if k != "baselines"}  # a JSON of before the baselines
    old["metrics"] = {k: v for k, v in back["metrics"].items() if not k.startswith("mouth")}
    assert run.render_table([old]).splitlines()[0].count("|") == 1 + 1 + 6 and "real" not in run.render_table([old])


def test_baseline_rows_equal_direct_scores_of_the_sources(toy_data):
    """unsynced == the video source scored as the generated video with the driving audio;
    real == the audio source scored as a reconstruction of itself. Same inputs, same
    code: equal to float64 round-off (rel 1e-12)."""
    detector = make_detector("box", box=toy_data["box"])
    kw = dict(scorer=MouthEnergyScorer(), metrics_wanted=["lse", "mouth"])
    pairs = run.read_filelist(toy_data["cross"])
    cross = run.evaluate_pairs(pairs, toy_data["mux"], toy_data["src"], "cross", detector, **kw)
    assert cross["num_evaluated"] == 1 and cross["pairs"][0]["lse_audio"] == "generated"
    real, unsynced = cross["baselines"]["real"], cross["baselines"]["unsynced"]
    assert real["method"] == "real (audio source)" and unsynced["method"] == "unsynced (video source + driving audio)"
    assert real["num_evaluated"] == unsynced["num_evaluated"] == 1
    scored = ("lse_c", "lse_d", *mouth.MOUTH_KEYS)
    for k in scored:
        assert unsynced["metrics"][k] == pytest.approx(cross["metrics"][k], rel=1e-12), k
    gen_pair, base_pair = cross["pairs"][0], cross["pairs"][0]["baselines"]["unsynced"]
    assert base_pair["av_offset"] == gen_pair["av_offset"] and base_pair["lse_windows"] == gen_pair["lse_windows"]
    own = run.evaluate_pairs(
        run.read_filelist(toy_data["own"]), toy_data["gen"], toy_data["src"], "reconstruction", detector, **kw
    )
    assert set(own["baselines"]) == {"real"}  # reconstruction: real == unsynced, one row
    for k in ("lse_c", "lse_d", "mouth_sync"):
        assert real["metrics"][k] == pytest.approx(own["metrics"][k], rel=1e-12), k
        assert own["baselines"]["real"]["metrics"][k] == pytest.approx(own["metrics"][k], rel=1e-12), k
    # How to read them: the real face follows its own voice; the untouched one follows its own
    # mouth, not the driving voice; the chance level is the two true openings' r.
    assert (
        real["metrics"]["lse_c"] > unsynced["metrics"]["lse_c"]
        and real["metrics"]["lse_d"] < unsynced["metrics"]["lse_d"]
    )
    assert real["metrics"]["mouth_sync"] > 0.9 and unsynced["metrics"]["mouth_copy"] > 0.9
    assert (
        unsynced["metrics"]["mouth_sync"] < 0.9
        and unsynced["metrics"]["mouth_chance"] == real["metrics"]["mouth_chance"]
    )
    off = run.evaluate_pairs(pairs, toy_data["mux"], toy_data["src"], "cross", detector, baselines=False, **kw)
    assert off["baselines"] == {} and "baselines" not in off["pairs"][0] and off["settings"]["baselines"] is False
    assert off["metrics"] == cross["metrics"]


def test_pearson_and_dark_fraction_math():
    assert mouth.pearson([1, 2, 3, 9], [2, 4, 6]) == pytest.approx(1.0)  # first min(len) entries
    assert mouth.pearson([1, 2, np.nan, 4], [4, 3, 0, 1]) == pytest.approx(-1.0)  # NaN entries dropped
    assert math.isnan(mouth.pearson([0.3] * 5, [1, 2, 3, 4, 5])) and math.isnan(mouth.pearson([1], [2]))
    frames = np.full((2, 20, 30, 3), 200, np.uint8)
    frames[:, 5:10, 4:8] = (59, 10, 10)  # dark: largest channel < 60
    frames[1, 5:10, 8:12] = (60, 10, 10)  # not dark
    got = mouth.mouth_darkness(frames, np.array([[4, 5, 12, 10], [3.5, 4.5, 12, 10.0]]))
    np.testing.assert_allclose(got, [20 / 40, 20 / 54])  # the second box touches 9 x 6 pixels
    assert np.isnan(mouth.mouth_darkness(frames[:1], np.array([[40.0, 0, 50, 5]])))[0]  # outside the frame
    steady = mouth.steady_boxes(np.array([[10, 10, 20, 14], [0, 0, 4, 8.0]]))
    np.testing.assert_allclose(steady, [[10, 8, 20, 16], [-3, 0, 7, 8]])  # centres kept, largest size


@pytest.fixture(scope="module")
def mouth_data(tmp_path_factory):
    """Two 8 s synthetic clips (128 px), long enough that unrelated mouths correlate at chance
    level (|r| <~ 0.2; over 1.6 s two independent openings reach r = 0.5), and frozen
    "generated" videos: clip 0's (closed) frame 0, clip 1's first wide-open frame."""
    from data_pipelines import synthetic
    from diff2lip_jax.video import read_frames, write_video

    root = tmp_path_factory.mktemp("mouth")
    src = root / "src"
    synthetic.generate_dataset(src, num_clips=2, seed=2, size=(128, 128), seconds=8.0, identities=2)
    clips = ["id00000/id00000_clip00000", "id00001/id00001_clip00000"]
    truths = [mouth.load_truth(src / f"{c}.mp4", 25.0) for c in clips]
    frames = [read_frames(src / f"{c}.mp4") for c in clips]
    x1, y1, x2, y2 = np.mean(json.loads((src / f"{clips[0]}.json").read_text())["face_boxes"], axis=0)
    gen = root / "gen"
    gen.mkdir()
    assert truths[0].opening[0] == 0.0  # closed: the frozen frame has no dark pixels
    opened = int(np.argmax(truths[1].opening > 0.8))
    for (a, v), still in (((1, 0), frames[0][0]), ((0, 1), frames[1][opened])):
        name = run.generated_name(run.Pair(clips[a], clips[v], 0))
        write_video(gen / name, np.repeat(still[None], len(frames[v]), axis=0), audio_path=src / f"{clips[a]}.wav")
    filelist = root / "cross.txt"
    filelist.write_text(f"{clips[1]} {clips[0]}\n{clips[0]} {clips[1]}\n")
    return dict(
        src=src, gen=gen, filelist=filelist, truths=truths, frames=frames, box=(int(y1), int(y2), int(x1), int(x2))
    )


def test_mouth_measure_follows_the_true_opening_and_a_frozen_mouth_does_not(mouth_data, tmp_path):
    for frames, truth in zip(mouth_data["frames"], mouth_data["truths"]):  # untouched clips: r 0.956, 0.970
        assert mouth.pearson(mouth.measure_mouth(frames, truth), truth.opening) > 0.9
    detector = make_detector("box", box=mouth_data["box"])
    res = run.evaluate_pairs(
        run.read_filelist(mouth_data["filelist"]), mouth_data["gen"], mouth_data["src"], "cross", detector
    )
    assert set(res["not_computed"]) == {"psnr", "ssim", "lmd", "fid", "lse"} and res["num_evaluated"] == 2
    closed, still_open = res["pairs"]
    # A frozen closed mouth: a constant measure (0 dark pixels), r undefined -> NaN, null, "–".
    assert math.isnan(closed["mouth_sync"]) and math.isnan(closed["mouth_copy"])
    # A frozen open mouth: chance level (|r| < 0.4, 2-3 standard errors of r for 8 s of
    # slowly varying openings; measured 0.08 and 0.28), vs > 0.9 for a mouth that follows.
    assert abs(still_open["mouth_sync"]) < 0.4 and abs(still_open["mouth_copy"]) < 0.4, still_open
    assert res["metrics"]["mouth_undefined"] == {"mouth_sync": 1, "mouth_copy": 1, "mouth_chance": 0}
    assert res["metrics"]["mouth_sync"] == pytest.approx(still_open["mouth_sync"])  # mean where defined
    for kind, key in (("real", "mouth_sync"), ("unsynced", "mouth_copy")):  # each clip vs its own truth
        assert all(p["baselines"][kind][key] > 0.9 for p in res["pairs"]), kind
    assert abs(res["baselines"]["unsynced"]["metrics"]["mouth_sync"]) < 0.4
    pairs = run.read_filelist(mouth_data["filelist"])
    closed_only = run.evaluate_pairs(pairs[:1], mouth_data["gen"], mouth_data["src"], "cross", detector)
    out = tmp_path / "r.json"
    run.write_json(out, closed_only)
    back = json.loads(out.read_text())
    assert back["pairs"][0]["mouth_sync"] is None and back["metrics"]["mouth_sync"] is None
    table = run.render_table([back])
    cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert cells[:6] == ["diff2lip-jax", "–", "–", "–", "–", "–"] and cells[6] == f"{closed['mouth_chance']:.3f}"
    assert "mouth r on 1 pairs (2 r undefined)" in table
    # Without ground truth beside the sources: a notice, not an error.
    bare = tmp_path / "bare"
    for c in ("id00000/id00000_clip00000", "id00001/id00001_clip00000"):
        (bare / c).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mouth_data["src"] / f"{c}.mp4", bare / f"{c}.mp4")
    none = run.evaluate_pairs(pairs[:1], mouth_data["gen"], bare, "cross", detector, metrics_wanted=["mouth"])
    assert none["not_computed"]["mouth"] == mouth.NO_TRUTH and none["baselines"] == {} and none["metrics"] == {}


# --------------------------------------------------------------------------- CLI


def _cli(*args, env=None):
    return start_module("diff2lip_jax.evaluate.cli", *args, env=env)


@pytest.mark.slow  # ~23 s: 9 CLI processes
def test_cli_toy_run_and_bad_inputs(toy_data, tmp_path):
    (tmp_path / "toy_lms.py").write_text(  # a --landmarks plug-in: the toy model above
        "import numpy as np\n_TEMPLATE = np.stack([np.linspace(10, 60, 68), np.linspace(20, 90, 68)], axis=1)\n"
        + inspect.getsource(toy_landmarks)
        + "\ndef make():\n    return toy_landmarks\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    base = [
        "--filelist",
        str(toy_data["recon"]),
        "--generated_dir",
        str(toy_data["gen"]),
        "--source_dir",
        str(toy_data["src"]),
    ]
    box = ",".join(map(str, toy_data["box"]))
    out = tmp_path / "res.json"
    bad_cases = {
        "mode": base + ["--mode", "sideways"],
        "filelist": [
            "--filelist",
            str(tmp_path / "none.txt"),
            "--generated_dir",
            str(tmp_path),
            "--source_dir",
            str(tmp_path),
            "--mode",
            "cross",
        ],
        "psnr in cross": base + ["--mode", "cross", "--metrics", "psnr"],
        "fid without weights": base + ["--mode", "reconstruction", "--metrics", "fid"],
        "generated_dir": base[:3] + [str(tmp_path / "missing_dir")] + base[4:] + ["--mode", "cross"],
        "syncnet file": base + ["--mode", "cross", "--syncnet_kind", "wav2lip", "--syncnet", str(tmp_path / "x.pth")],
        "landmarks": base + ["--mode", "reconstruction", "--landmarks", "no_such_module_xyz:make"],
        "mouth without ground truth": base[:5] + [str(toy_data["gen"]), "--mode", "cross", "--metrics", "mouth"],
    }
    procs = {name: _cli(*case) for name, case in bad_cases.items()}
    errors = {}
    for name, proc in procs.items():
        result = finish(proc, timeout=120)
        one_line_error(result, "diff2lip-evaluate: error:", context=name)
        errors[name] = result.stderr
    assert "--metrics=mouth" in errors["mouth without ground truth"]
    assert (
        fid_lib.FID_WEIGHTS_FILE in errors["fid without weights"]
        and "github.com/mseitzer" in errors["fid without weights"]
    )
    good = _cli(
        *base,
        "--mode",
        "reconstruction",
        "--face_detector",
        "box",
        "--box",
        box,
        "--out",
        str(out),
        "--fid_weights",
        "random",
        "--fid_method",
        "spectral",
        "--fid_frame_stride",
        "20",
        "--fid_batch_size",
        "2",
        "--landmarks",
        "toy_lms:make",
        "--max_pairs",
        "2",
        env=env,
    )
    stdout, stderr = good.communicate(timeout=300)
    assert good.returncode == 0, stderr
    assert "RANDOM Inception weights" in stderr and "LSE not computed" in stderr
    res = json.loads(out.read_text())
    assert res["num_evaluated"] == 2 and res["metrics"]["psnr"] == "inf" and res["metrics"]["lmd"] == 0.0
    assert "lse" in res["not_computed"] and abs(res["metrics"]["fid"]) < 1e-3
    assert (tmp_path / "res.md").read_text() in stdout
    assert res["settings"]["baselines"] is True and res["baselines"]["real"]["metrics"]["mouth_sync"] > 0.9
    assert "| real (audio source) | – | – | – | – | – | – | 0.9" in stdout  # mouth r only: no SyncNet given
    table = _cli("--table_from", f"{out},{out}", "--table", str(tmp_path / "t.md"))
    t_out, t_err = table.communicate(timeout=120)
    assert table.returncode == 0, t_err
    assert t_out == (tmp_path / "t.md").read_text() and "| diff2lip-jax | ∞ | 1.000 |" in t_out

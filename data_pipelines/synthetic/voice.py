"""Speech-like audio and the audio features that drive the synthetic mouth.

The signal is a source-filter caricature of speech, enough for lip-sync to be
learnable from a mel spectrogram:

* a voiced source: harmonics of an f0 contour (phrase declination + syllable
  accents + slow jitter) inside the speaker's range, with a 1/k spectral tilt;
* a cascade of three second-order formant resonances whose centre frequencies glide
  between vowel targets, one vowel per syllable (the "bandpass filtering" is applied
  as each harmonic's gain |H(k f0(t), t)|, i.e. additive synthesis, which is exact
  for a time-varying filter and needs no filter state);
* syllable envelopes at 3-6 Hz grouped into phrases separated by silent pauses (so
  the mouth closes), fricative bursts at some syllable onsets, breath noise and a
  faint noise floor.

Everything is vectorised numpy; one clip of 3 s takes a few tens of milliseconds.
The mouth of the synthetic face is a deterministic function of the waveform
(:func:`mouth_from_audio`), evaluated in each video frame's own time window, so a
model that sees the audio around a frame can predict its mouth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diff2lip_jax.constants import SAMPLE_RATE  # Hz; the models' audio rate

_HOP = 80  # control-rate step in samples (5 ms): envelopes, f0 and formants live here
_MAX_HARMONIC_HZ = 6500.0  # harmonics above this carry no useful energy and cost time

# Vowel formant targets (F1, F2, F3) in Hz for an adult male voice (Peterson & Barney).
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0],  # a
        [530.0, 1840.0, 2480.0],  # e
        [270.0, 2290.0, 3010.0],  # i
        [570.0, 840.0, 2410.0],  # o
        [300.0, 870.0, 2240.0],  # u
        [660.0, 1720.0, 2410.0],  # ae
    ]
)
_BANDWIDTHS = np.array([80.0, 100.0, 150.0])  # formant bandwidths in Hz

# Mapping of frame loudness to mouth opening: fixed levels in dBFS so that the same
# loudness opens every speaker's mouth equally (clips are normalised to _TARGET_DB).
_TARGET_DB = -20.0  # 95th percentile of the per-frame RMS after normalisation
_CLOSED_DB = -50.0  # at or below: closed mouth
_OPEN_DB = -21.0  # at or above: fully open
# Spectral brightness (energy share above 1 kHz) mapped to mouth width in [0, 1].
_NARROW_BRIGHTNESS = 0.01
_WIDE_BRIGHTNESS = 0.15


@dataclasses.dataclass(frozen=True)
class Voice:
    """A speaker's voice: f0 range in Hz, formant scale, breathiness, syllable rate (Hz)."""

    f0_low: float
    f0_high: float
    formant_scale: float
    breathiness: float
    syllable_rate: float


def make_voice(rng: np.random.Generator) -> Voice:
    """Draws a voice: f0 between 100 and 250 Hz, formants scaled with f0 (smaller vocal tract)."""
    low = float(rng.uniform(100.0, 190.0))
    high = float(min(250.0, low * rng.uniform(1.3, 1.6)))
    # Higher voices have shorter vocal tracts, hence higher formants (up to ~+20 %).
    scale = float(1.0 + 0.2 * (low - 100.0) / 90.0 + rng.normal(0.0, 0.02))
    return Voice(low, high, scale, float(rng.uniform(0.02, 0.08)), float(rng.uniform(3.5, 5.5)))


Syllable = tuple[float, float, float, int, bool]  # start s, length s, peak amplitude, vowel, fricative onset


def _syllable_plan(rng: np.random.Generator, duration: float, voice: Voice) -> list[Syllable]:
    """Syllables of the whole clip, grouped in phrases separated by pauses."""
    plan = []
    t = float(rng.uniform(0.05, 0.35))  # leading silence: the clip starts with a closed mouth
    while t < duration:
        for j in range(int(rng.integers(2, 8))):  # one phrase
            if j and rng.random() < 0.5:
                t += float(rng.uniform(0.04, 0.09))  # stop-consonant closure: lips shut briefly
            length = 1.0 / float(np.clip(rng.normal(voice.syllable_rate, 0.8), 3.0, 6.0))
            peak, vowel = float(rng.uniform(0.35, 1.0)), int(rng.integers(len(_VOWELS)))
            plan.append((t, length, peak, vowel, bool(rng.random() < 0.3)))
            t += length
        t += float(rng.uniform(0.2, 0.7))  # pause between phrases
    return plan


def _control_tracks(
    rng: np.random.Generator, num_control: int, plan: list[Syllable], voice: Voice
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Control-rate (200 Hz) float64 tracks: voiced envelope ``[C]``, fricative envelope
    ``[C]``, f0 in Hz ``[C]`` and formant frequencies in Hz ``[C, 3]``."""
    ct = np.arange(num_control) * (_HOP / SAMPLE_RATE)  # control times in s
    env = np.zeros(num_control)
    fric = np.zeros(num_control)
    accent = np.zeros(num_control)
    span = voice.f0_high - voice.f0_low
    centres, targets = [], []
    for start, length, peak, vowel, fricative in plan:
        x = (ct - start) / length
        inside = (x > 0.0) & (x < 1.0)
        # Asymmetric bump: fast attack, slower decay, zero at the syllable boundaries so
        # consecutive syllables dip (lips close briefly between them, as for /b m p/).
        shape = np.where(inside, np.sin(np.pi * np.clip(x, 0, 1) ** 0.7) ** 1.5, 0.0)
        env = np.maximum(env, peak * shape)
        accent = np.maximum(accent, rng.uniform(0.0, 0.3) * shape)
        if fricative:
            burst = np.exp(-0.5 * ((ct - start - 0.02) / 0.015) ** 2)
            fric = np.maximum(fric, rng.uniform(0.1, 0.25) * peak * burst)
        centres.append(start + 0.45 * length)
        targets.append(_VOWELS[vowel] * voice.formant_scale * rng.uniform(0.95, 1.05, size=3))
    # Formants glide linearly between consecutive vowel targets (coarticulation).
    centres_a = np.asarray(centres) if centres else np.zeros(1)
    targets_a = np.asarray(targets) if targets else _VOWELS[:1] * voice.formant_scale
    formants = np.stack([np.interp(ct, centres_a, targets_a[:, i]) for i in range(3)], axis=1)
    # Intonation: phrase-level declination (a slow cosine), accents on syllables, jitter.
    # Jitter: white noise smoothed over 0.2 s (41 control steps), peak-normalised.
    slow = np.convolve(rng.normal(0.0, 1.0, num_control), np.hanning(41), mode="same")
    slow = slow / (np.abs(slow).max() + 1e-9)
    declination = 0.5 + 0.3 * np.cos(2 * np.pi * ct / rng.uniform(1.5, 3.0) + rng.uniform(0, 2 * np.pi))
    f0 = voice.f0_low + span * np.clip(declination + accent + 0.1 * slow, 0.0, 1.0)
    return env, fric, f0, formants


def _cascade_gain(freq: np.ndarray, formants: np.ndarray, scale: float) -> np.ndarray:
    """|H(f)| of three cascaded 2nd-order resonators (unit gain at DC): ``freq [K, C]``, ``formants [C, 3]``."""
    gain = np.ones_like(freq)
    for i in range(3):
        fi = formants[None, :, i]
        bi = _BANDWIDTHS[i] * scale
        gain = gain * fi**2 / np.sqrt((fi**2 - freq**2) ** 2 + (freq * bi) ** 2)
    return gain


def synthesize_speech(rng: np.random.Generator, num_samples: int, voice: Voice) -> np.ndarray:
    """Speech-like mono audio at 16 kHz.

    Args:
      rng: the clip's audio stream; the same state gives the same samples.
      num_samples: output length N.
      voice: speaker parameters (f0 range, formant scale, ...).

    Returns:
      float32 ``[N]``; frames are normalised so that the 95th-percentile 40 ms RMS is
      -20 dBFS (peaks stay below 1).
    """
    import scipy.signal  # 0.6 s to import: deferred so that CLI usage errors stay instant

    duration = num_samples / SAMPLE_RATE
    num_control = num_samples // _HOP + 2
    env, fric, f0, formants = _control_tracks(rng, num_control, _syllable_plan(rng, duration, voice), voice)

    n = np.arange(num_samples)
    pos = n / _HOP
    i0 = np.minimum(pos.astype(np.int64), num_control - 2)
    frac = (pos - i0).astype(np.float32)

    def upsample(track: np.ndarray) -> np.ndarray:  # control rate [.., C] -> audio rate [.., N]
        return track[..., i0] * (1.0 - frac) + track[..., i0 + 1] * frac

    f0_s = upsample(f0)
    phase = 2.0 * np.pi * np.cumsum(f0_s) / SAMPLE_RATE  # float64: keeps the phase exact over minutes
    k = np.arange(1, int(_MAX_HARMONIC_HZ // voice.f0_low) + 1, dtype=np.float64)[:, None]
    freq = k * f0[None, :]  # [K, C]
    amp = (_cascade_gain(freq, formants, voice.formant_scale) / k * (freq < _MAX_HARMONIC_HZ)).astype(np.float32)
    voiced = np.zeros(num_samples, np.float32)
    chunk = 8000  # bound the [K, chunk] temporaries (~2 MB each)
    for s in range(0, num_samples, chunk):
        sl = slice(s, min(s + chunk, num_samples))
        a = amp[:, i0[sl]] * (1.0 - frac[sl]) + amp[:, i0[sl] + 1] * frac[sl]
        voiced[sl] = np.einsum("kn,kn->n", a, np.sin(k * phase[None, sl]).astype(np.float32))
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-9

    noise = rng.standard_normal((3, num_samples)).astype(np.float32)
    hiss_filter = scipy.signal.butter(4, 2500.0, "highpass", fs=SAMPLE_RATE, output="sos")
    breath_filter = scipy.signal.butter(2, [300.0, 3500.0], "bandpass", fs=SAMPLE_RATE, output="sos")
    hiss = scipy.signal.sosfilt(hiss_filter, noise[0])
    breath = scipy.signal.sosfilt(breath_filter, noise[1])
    env_s = upsample(env).astype(np.float32)
    wav = env_s * (voiced + voice.breathiness * 3.0 * breath) + 2.5 * upsample(fric) * hiss

    rms = frame_rms(wav, 25.0, int(np.ceil(duration * 25.0)))
    ref = float(np.percentile(rms[rms > 0], 95)) if np.any(rms > 0) else 1.0
    wav = wav * (10.0 ** (_TARGET_DB / 20.0) / ref)
    wav = wav / max(1.0, float(np.abs(wav).max()) / 0.95)
    wav = wav + 10.0 ** (-70.0 / 20.0) * noise[2]  # noise floor: silence is never digital zero
    return wav.astype(np.float32)


def frame_bounds(num_frames: int, fps: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Sample index where each video frame's window starts, int64 ``[num_frames + 1]``.

    Frame ``i`` owns samples ``[bounds[i], bounds[i + 1])``, i.e. the time
    ``[i / fps, (i + 1) / fps)`` (40 ms at 25 fps, 33.3 ms at 30 fps).
    """
    return np.round(np.arange(num_frames + 1) * (sr / fps)).astype(np.int64)


def _frames(wav: np.ndarray, fps: float, num_frames: int, sr: int) -> list[np.ndarray]:
    b = frame_bounds(num_frames, fps, sr)
    wav = np.asarray(wav, np.float64).reshape(-1)
    return [wav[b[i] : max(b[i + 1], b[i] + 1)] for i in range(num_frames)]


def frame_rms(wav: np.ndarray, fps: float, num_frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """RMS of ``wav [N]`` in each video frame's window: float32 ``[num_frames]`` (0 past the end)."""
    frames = _frames(wav, fps, num_frames, sr)
    return np.array([np.sqrt(np.mean(x**2)) if x.size else 0.0 for x in frames], np.float32)


def frame_brightness(wav: np.ndarray, fps: float, num_frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Share of each frame's 100-4000 Hz energy that lies above 1 kHz: float32 ``[num_frames]``.

    Front vowels (/i/, /e/: high F2) are bright, rounded ones (/o/, /u/) dark, so this
    is a cheap proxy of lip spreading versus rounding.
    """
    n_fft = 1024
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    low, high = (f >= 100) & (f < 1000), (f >= 1000) & (f < 4000)
    out = np.zeros(num_frames, np.float32)
    for i, x in enumerate(_frames(wav, fps, num_frames, sr)):
        if x.size < 2:
            continue
        p = np.abs(np.fft.rfft(x * np.hanning(x.size), n_fft)) ** 2
        out[i] = p[high].sum() / (p[low].sum() + p[high].sum() + 1e-12)
    return out


def mouth_from_audio(
    wav: np.ndarray, fps: float, num_frames: int, sr: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth mouth of every video frame, computed from the audio alone.

    Opening: frame RMS in dBFS mapped linearly from -50 dB (closed) to -21 dB (fully
    open), then smoothed with a [1, 2, 1] / 4 kernel over neighbouring frames (lips
    move a little ahead of and behind the sound). Width: spectral brightness, only
    where the mouth is open (a closed mouth rests at neutral width 0.5).

    Args:
      wav: float ``[N]`` at ``sr``.
      fps: video frame rate; frame ``i`` uses the audio of ``[i / fps, (i + 1) / fps)``.
      num_frames: F.

    Returns:
      ``(opening, width)``, float32 ``[F]`` each, in [0, 1].
    """
    db = 20.0 * np.log10(frame_rms(wav, fps, num_frames, sr).astype(np.float64) + 1e-9)
    raw = np.clip((db - _CLOSED_DB) / (_OPEN_DB - _CLOSED_DB), 0.0, 1.0)
    padded = np.pad(raw, 1, mode="edge")
    opening = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    bright = frame_brightness(wav, fps, num_frames, sr)
    bright = np.clip((bright - _NARROW_BRIGHTNESS) / (_WIDE_BRIGHTNESS - _NARROW_BRIGHTNESS), 0.0, 1.0)
    width = 0.5 + (bright - 0.5) * np.clip(2.0 * opening, 0.0, 1.0)
    return opening.astype(np.float32), width.astype(np.float32)

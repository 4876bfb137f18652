"""The Audio modality: log-mel spectrogram images of a video's soundtrack, one per sampled segment.

What Multimodal-Distillation (Radevski et al.) feeds its audio teacher on EPIC-Kitchens, with the same
function computed in torch (torchaudio has no release for our torch):

  waveform, mono, 24 kHz
  -> per sampled frame k (1-based) of a video at `fps`: a window of int(1.116 * 24000) = 26784 samples
     centred on sample int((k - 1) * 24000 / fps), zeros outside the track
  -> power mel spectrogram (torchaudio.transforms.MelSpectrogram(n_fft=1024, win_length=160,
     hop_length=80), i.e. its defaults for the rest: periodic Hann window of 160 samples zero-padded to
     1024 in the centre, centred frames with reflect padding, |STFT|^2, 128 HTK-scale triangular filters
     without area normalisation between 0 Hz and 8 kHz computed for a 16 kHz sample rate (the reference
     never passes its 24 kHz to MelSpectrogram, so its filterbank is torchaudio's 16 kHz default)
  -> (128, 335) resized to input_size x input_size by nearest-neighbour interpolation (F.interpolate)
  -> 10 * log10(max(x, 1e-10)) (AmplitudeToDB: power, reference 1, no top_db)
  -> (x - (-28.1125)) / 16.5627, repeated to 3 channels.

Every constant is an AudioSettings field (and a --audio_* option). Sources: the audio track of the video
file, a .wav/.flac file per video, or an HDF5 store (ops.hdf5_store); decoded once per clip with PyAV
(torchcodec needs the system's FFmpeg libraries, which this project never depends on), averaged to mono and resampled to the settings'
rate in torch when the file has another rate (``resample``: windowed-sinc interpolation, torchaudio's
default method).
"""
import dataclasses
import math
import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ops.video_io import FrameReadError

@dataclasses.dataclass(frozen=True)
class AudioSettings:
    """Spectrogram constants (defaults: the paper's EPIC-Kitchens audio) and where the audio is.

    fps: frame rate of the list's frame numbers (None: the video file's own rate; needed for .wav/HDF5).
    tmpl: the audio file of a video under the root, '{}' = the list's path (frames-format lists)."""
    sample_rate: int = 24000
    window: float = 1.116          # seconds per spectrogram
    n_fft: int = 1024
    win_length: int = 160
    hop_length: int = 80
    n_mels: int = 128
    mel_rate: int = 16000          # sample rate the filterbank is computed for (torchaudio's default)
    mean: float = -28.1125
    std: float = 16.5627
    fps: Optional[float] = None
    tmpl: str = '{}.wav'
    allow_missing: bool = False

    def __post_init__(self):
        positive = ('sample_rate', 'window', 'n_fft', 'win_length', 'hop_length', 'n_mels', 'mel_rate', 'std')
        bad = [f'{k}={getattr(self, k)}' for k in positive if not getattr(self, k) > 0]
        if self.fps is not None and not self.fps > 0:
            bad.append(f'fps={self.fps}')
        if bad:
            raise ValueError(f'audio settings must be > 0: {", ".join(bad)} (--audio_* options)')
        if self.win_length > self.n_fft:
            raise ValueError(f'audio win_length {self.win_length} exceeds n_fft {self.n_fft}')
        if '{}' not in self.tmpl:
            raise ValueError(f"--audio_tmpl {self.tmpl!r} must contain '{{}}' (the video's path in the list)")

    @property
    def segment_samples(self) -> int:
        return int(self.window * self.sample_rate)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def audio_settings(values: Optional[dict] = None, **overrides) -> AudioSettings:
    """AudioSettings from a recorded dict (unknown keys refused) and keyword overrides (None = keep)."""
    merged = dict(values or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(AudioSettings)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f'unknown audio settings {unknown}; known: {sorted(known)}')
    return AudioSettings(**merged)


# ----------------------------------------------------------------------------------------------------
# Spectrogram maths

def hz_to_mel(f):
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: Optional[float] = None) -> torch.Tensor:
    """Triangular HTK mel filters without normalisation: float32 (n_freqs, n_mels).

    Bin i is at i * (sample_rate // 2) / (n_freqs - 1) Hz; filter m rises from mel point m to m + 1 and
    falls to m + 2, the n_mels + 2 points equally spaced in mel between f_min and f_max (default
    sample_rate / 2)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                      dtype=torch.float64))
    width = points[1:] - points[:-1]                          # (n_mels + 1,)
    offset = points[None, :] - freqs[:, None]                 # (n_freqs, n_mels + 2)
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def power_spectrogram(x: torch.Tensor, n_fft: int, win_length: int, hop_length: int) -> torch.Tensor:
    """(..., N) float -> |STFT|^2 (..., n_fft // 2 + 1, 1 + N // hop_length): periodic Hann window of
    win_length centred in n_fft, frames centred on multiples of hop_length (reflect padding)."""
    window = torch.hann_window(win_length, periodic=True, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=win_length, window=window, center=True,
                      pad_mode='reflect', normalized=False, onesided=True, return_complex=True)
    return spec.real.square() + spec.imag.square()


def to_db(power: torch.Tensor, amin: float = 1e-10) -> torch.Tensor:
    """AmplitudeToDB('power', top_db=None) with reference 1: 10 * log10(max(power, amin))."""
    return 10.0 * torch.log10(torch.clamp(power, min=amin))


def segment_starts(frame_numbers: Sequence[int], fps: float, settings: AudioSettings) -> np.ndarray:
    """1-based frame numbers -> first sample of each window: centre int((k - 1) * rate / fps) minus
    floor(L / 2) (the reference's centre frame and split of an odd length L)."""
    centres = np.array([int((int(k) - 1) * settings.sample_rate / fps) for k in frame_numbers], dtype=np.int64)
    return centres - settings.segment_samples // 2


def cut_segments(waveform: torch.Tensor, starts: Sequence[int], length: int) -> torch.Tensor:
    """(N,) -> (S, length) windows starting at `starts`, zeros where a window leaves the track."""
    starts = np.asarray(starts, dtype=np.int64)
    lo = min(0, int(starts.min())) if len(starts) else 0
    hi = max(len(waveform), int(starts.max()) + length) if len(starts) else len(waveform)
    padded = F.pad(waveform, (-lo, hi - len(waveform)))
    index = torch.as_tensor(starts - lo)[:, None] + torch.arange(length)[None, :]
    return padded[index]


def spectrogram_images(waveform: torch.Tensor, frame_numbers: Sequence[int], fps: float, size: int,
                       settings: AudioSettings, filterbank: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mono waveform at settings.sample_rate -> normalised images float32 (S, 3, size, size), one per
    1-based frame number (see the module docstring for each step)."""
    segments = cut_segments(waveform.float(), segment_starts(frame_numbers, fps, settings),
                            settings.segment_samples)
    power = power_spectrogram(segments, settings.n_fft, settings.win_length, settings.hop_length)
    if filterbank is None:
        filterbank = mel_filterbank(settings.n_fft // 2 + 1, settings.n_mels, settings.mel_rate)
    mel = torch.matmul(power.transpose(1, 2), filterbank).transpose(1, 2)   # (S, n_mels, frames)
    image = F.interpolate(mel.unsqueeze(0), size=(size, size), mode='nearest')[0]   # (S, size, size)
    image = (to_db(image) - settings.mean) / settings.std
    return image.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


# ----------------------------------------------------------------------------------------------------
# Resampling

def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int, width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """(N,) -> (ceil(N * new / orig),): band-limited interpolation with a Hann-windowed sinc of `width`
    zero crossings and cut-off rolloff * min(rates) / 2 (torchaudio.functional.resample's default
    'sinc_interp_hann' method). Equal rates return the input."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return waveform
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    base = min(orig, new) * rolloff
    half = int(math.ceil(width * orig / base))
    # Output phase j of every block of `new` outputs reads the inputs orig * block + [-half, half + orig).
    taps = torch.arange(-half, half + orig, dtype=torch.float64)[None, :] / orig
    t = (taps - torch.arange(new, dtype=torch.float64)[:, None] / new) * base
    t = t.clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernels = (sinc * window * base / orig).to(waveform.dtype)        # (new, 2 * half + orig)
    n = waveform.shape[-1]
    x = F.pad(waveform.reshape(1, 1, n), (half, half + orig))
    out = F.conv1d(x, kernels[:, None, :], stride=orig)               # (1, new, blocks)
    out = out[0].t().reshape(-1)
    return out[:int(math.ceil(new * n / orig))]


# ----------------------------------------------------------------------------------------------------
# Decoding

class MissingAudioError(FrameReadError):
    """A video file without an audio stream."""


def _mono(channels: np.ndarray) -> torch.Tensor:
    # (C, N) float -> (N,) float32: the channel mean
    return torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32)).mean(0)


def _decode_pyav(path):
    import av
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MissingAudioError(f'{path} has no audio track')
            stream = container.streams.audio[0]
            stream.thread_type = 'AUTO'
            # fltp: float planar, (channels, samples) per frame, whatever the stored sample format
            converter = av.AudioResampler(format='fltp')
            chunks = []
            for frame in container.decode(stream):
                for out in converter.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in converter.resample(None):
                chunks.append(out.to_ndarray())
            rate = stream.rate
    except MissingAudioError:
        raise
    except (av.error.FFmpegError, OSError) as err:
        raise FrameReadError(f'cannot decode the audio of {path}: {err}') from err
    if not chunks:
        raise FrameReadError(f'{path}: its audio track holds no samples')
    return _mono(np.concatenate(chunks, axis=1)), int(rate)


def decode_audio(path: str):
    """Whole audio track of a video or audio file -> (mono float32 waveform (N,), sample rate)."""
    if not os.path.isfile(path):
        raise FrameReadError(f'audio source not found: {path}')
    return _decode_pyav(path)


def load_waveform(path: str, sample_rate: int) -> torch.Tensor:
    """Mono waveform of a file at `sample_rate` (resampled when the file has another rate)."""
    waveform, rate = decode_audio(path)
    return resample(waveform, rate, sample_rate)


def write_wav(path: str, waveform, sample_rate: int) -> None:
    """Float mono samples in [-1, 1] -> 16-bit PCM .wav (Python's wave module)."""
    import wave
    pcm = np.round(np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0) * 32767).astype('<i2')
    with wave.open(path, 'wb') as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())


def has_audio_track(path: str) -> bool:
    """Whether a media file has an audio stream (header only, nothing decoded)."""
    import av
    with av.open(path) as container:
        return bool(container.streams.audio)


def media_durations(path: str):
    """(audio seconds or None, video frame rate or None) from a media file's header."""
    import av
    with av.open(path) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        video = container.streams.video[0] if container.streams.video else None
        seconds = None
        if audio is not None:
            if audio.duration is not None and audio.time_base is not None:
                seconds = float(audio.duration * audio.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1e6
        fps = float(video.average_rate) if video is not None and video.average_rate else None
    return seconds, fps

"""The Audio modality: spectrogram maths against hand-computed values, resampling, decoding real wav / mp4 /
HDF5 files, the dataset, the toy soundtrack and the data tools."""
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import load_script
from ops.audio import (AudioSettings, MissingAudioError, audio_settings, cut_segments, decode_audio,
                       has_audio_track, hz_to_mel, load_waveform, mel_filterbank, mel_to_hz, power_spectrogram, resample,
                       segment_starts, spectrogram_images, to_db, write_wav)
from ops.dataset import VideoDataSet
from ops.readers import ReaderConfig
from ops.sampling import SamplingConfig
from ops.toy import AUDIO_RATE, PAIR_PITCH, soundtrack, write_video


# ---------------------------------------------------------------------------------------------- maths
def test_mel_filterbank_matches_the_htk_formula_by_hand():
    # torchaudio.functional.melscale_fbanks(n_freqs=5, f_min=0, f_max=4000, n_mels=2, sample_rate=8000,
    # norm=None, mel_scale='htk') written out: bins at 0, 1000, 2000, 3000, 4000 Hz; 4 mel points.
    def mel(f):
        return 2595 * math.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)
    points = [hz(mel(4000) * k / 3) for k in range(4)]
    expected = np.zeros((5, 2))
    for i, f in enumerate([0, 1000, 2000, 3000, 4000]):
        for m in range(2):
            rise = (f - points[m]) / (points[m + 1] - points[m])
            fall = (points[m + 2] - f) / (points[m + 2] - points[m + 1])
            expected[i, m] = max(0.0, min(rise, fall))
    got = mel_filterbank(5, 2, 8000)
    assert got.shape == (5, 2) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert expected[1, 0] > 0 and expected[2, 1] > 0          # the case is not all zeros
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    assert float(mel_to_hz(hz_to_mel(1234.5))) == pytest.approx(1234.5)


def test_power_spectrogram_is_the_windowed_dft_by_hand():
    # n_fft 8, win 4 (periodic Hann centred: 2 zeros either side), hop 2, centre frames (reflect pad 4)
    x = np.sin(np.arange(16) * 0.7) + 0.1 * np.arange(16)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(4) / 4)
    window = np.concatenate([np.zeros(2), hann, np.zeros(2)])
    padded = np.pad(x, 4, mode='reflect')
    frames = [padded[t * 2:t * 2 + 8] * window for t in range(1 + 16 // 2)]
    expected = np.stack([np.abs(np.fft.rfft(f)) ** 2 for f in frames], axis=1)     # (5, 9)
    got = power_spectrogram(torch.tensor(x), n_fft=8, win_length=4, hop_length=2)
    assert got.shape == (5, 9)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_to_db_segments_and_starts_by_hand():
    assert to_db(torch.tensor([1.0, 10.0, 100.0, 0.0])).tolist() == pytest.approx([0, 10, 20, -100])
    windows = cut_segments(torch.arange(1.0, 11.0), [-2, 3, 8], 4)
    assert windows.tolist() == [[0, 0, 1, 2], [4, 5, 6, 7], [9, 10, 0, 0]]
    settings = AudioSettings()
    assert settings.segment_samples == 26784                      # int(1.116 * 24000)
    # frame k (1-based) at 12 fps: centre int((k - 1) * 24000 / 12), minus 26784 // 2
    assert segment_starts([1, 13, 4], 12, settings).tolist() == [-13392, 24000 - 13392, 6000 - 13392]


def test_spectrogram_images_of_silence_and_of_a_tone():
    settings = AudioSettings()
    silent = spectrogram_images(torch.zeros(48000), [1, 12], 12, 32, settings)
    assert silent.shape == (2, 3, 32, 32)
    # 10 * log10(1e-10) = -100 dB everywhere, normalised with the paper's constants
    assert torch.allclose(silent, torch.full_like(silent, (-100 + 28.1125) / 16.5627))
    # a 2 kHz tone: the filterbank is computed for 16 kHz (the reference's torchaudio default), so the STFT
    # bin of 2 kHz at 24 kHz (2000 / 24000 * 1024 = 85.3) is the filterbank's 1333 Hz; its mel row is the
    # brightest one of the image (rows are mel bins, low frequencies first; nearest resize 128 -> 32 rows)
    t = torch.arange(48000, dtype=torch.float64) / 24000
    img = spectrogram_images(torch.sin(2 * math.pi * 2000 * t).float(), [12], 12, 32, settings)[0, 0]
    fb = mel_filterbank(513, 128, 16000)
    mel_row = int(fb[85].argmax())
    assert int(img.mean(1).argmax()) == mel_row * 32 // 128
    assert torch.equal(img, spectrogram_images(torch.sin(2 * math.pi * 2000 * t).float(), [12], 12, 32,
                                               settings)[0, 2])


def test_resample_a_sine_and_equal_rates():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    y = resample(torch.sin(2 * math.pi * 440 * t), 16000, 24000)
    assert y.shape == (24000,)
    ref = torch.sin(2 * math.pi * 440 * torch.arange(24000, dtype=torch.float64) / 24000)
    assert float((y - ref)[200:-200].abs().max()) < 2e-3
    down = resample(ref, 24000, 16000)
    assert down.shape == (16000,) and float((down - torch.sin(2 * math.pi * 440 * t))[200:-200].abs().max()) < 2e-3
    x = torch.randn(100)
    assert resample(x, 24000, 24000) is x


def test_settings_are_validated():
    with pytest.raises(ValueError, match='win_length 2048 exceeds n_fft'):
        AudioSettings(win_length=2048)
    with pytest.raises(ValueError, match='fps=0'):
        AudioSettings(fps=0)
    with pytest.raises(ValueError, match='unknown audio settings'):
        audio_settings({'hop': 3})
    assert audio_settings({'n_mels': 64}, n_mels=None, hop_length=40) == AudioSettings(n_mels=64, hop_length=40)


# ---------------------------------------------------------------------------------------------- files
def _tone(seconds, rate, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_decode_wav_and_mp4_audio_track(tmp_path):
    wave = _tone(0.5, 16000)
    write_wav(str(tmp_path / 'a.wav'), wave, 16000)
    got, rate = decode_audio(str(tmp_path / 'a.wav'))
    assert rate == 16000 and got.shape == (8000,)
    np.testing.assert_allclose(got.numpy(), np.round(wave * 32767) / 32768, atol=1e-6)
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    write_video(str(tmp_path / 'with.mp4'), frames, fps=12, audio=wave, audio_rate=16000)
    write_video(str(tmp_path / 'without.mp4'), frames, fps=12)
    assert has_audio_track(str(tmp_path / 'with.mp4')) and not has_audio_track(str(tmp_path / 'without.mp4'))
    got, rate = decode_audio(str(tmp_path / 'with.mp4'))
    assert rate == 16000 and abs(len(got) - 8000) <= 1024          # AAC frames of 1024 samples
    assert 0.3 < float(got.abs().max()) < 0.7
    with pytest.raises(MissingAudioError, match='without.mp4 has no audio track'):
        decode_audio(str(tmp_path / 'without.mp4'))
    # a stereo 48 kHz .flac: channel mean, lossless, resampled by load_waveform
    import av
    with av.open(str(tmp_path / 'a.flac'), 'w') as container:
        stream = container.add_stream('flac', rate=48000, layout='stereo')
        pcm = np.round(np.stack([_tone(0.25, 48000), np.zeros(12000, np.float32)]) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format='s16p', layout='stereo')
        frame.sample_rate = 48000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    got, rate = decode_audio(str(tmp_path / 'a.flac'))
    assert rate == 48000 and got.shape == (12000,)
    np.testing.assert_allclose(got.numpy(), pcm[0] / 32768 / 2, atol=1e-6)
    assert load_waveform(str(tmp_path / 'a.flac'), 24000).shape == (6000,)


@pytest.fixture
def audio_tree(tmp_path, write_list):
    """Three videos: mp4 with an AAC track, 16 kHz wav, and a 24 kHz HDF5 store packed from the wavs."""
    import h5py
    from ops.hdf5_store import write_audio
    counts = {'v0': 12, 'v1': 18, 'v2': 9}
    os.makedirs(tmp_path / 'audio')
    os.makedirs(tmp_path / 'videos')
    with h5py.File(tmp_path / 'audio.h5', 'w') as h5:
        for i, (vid, n) in enumerate(counts.items()):
            wave = _tone(n / 12, 16000, freq=300.0 * (i + 1))
            write_wav(str(tmp_path / 'audio' / f'{vid}.wav'), wave, 16000)
            write_video(str(tmp_path / 'videos' / f'{vid}.mp4'), np.zeros((n, 32, 32, 3), np.uint8), fps=12,
                        audio=wave, audio_rate=16000)
            write_audio(h5, vid, resample(torch.from_numpy(np.round(wave * 32767) / 32768), 16000, 24000).numpy(),
                        24000)
    lines = [f'{vid} {n} {i}' for i, (vid, n) in enumerate(counts.items())]
    return dict(root=tmp_path, counts=counts, list=write_list(tmp_path / 'list.txt', lines),
                video_list=write_list(tmp_path / 'video.txt', [f'{vid}.mp4 {i}' for i, vid in enumerate(counts)]))


def _dataset(root, list_file, data_format, mode='val', **kw):
    from ops.transforms import build_transform
    transform = build_transform(mode == 'train', 'Audio', input_size=32, scale_size=32,
                                test_crops=3 if mode == 'test' else 1)
    return VideoDataSet(str(root), list_file, modality='Audio', transform=transform,
                        sampling=SamplingConfig(num_segments=4, mode=mode),
                        reading=ReaderConfig(data_format=data_format, audio=kw.pop('audio', dict(fps=12))), **kw)


def test_dataset_reads_wav_hdf5_and_video_alike(audio_tree):
    r = audio_tree['root']
    wav = _dataset(r / 'audio', audio_tree['list'], 'frames')
    h5 = _dataset(r / 'audio.h5', audio_tree['list'], 'hdf5')
    video = _dataset(r / 'videos', audio_tree['video_list'], 'video', audio=dict(fps=None))
    for i in range(3):
        a, label, _ = wav[i]
        b, _, _ = h5[i]
        c, _, _ = video[i]
        assert a.shape == (4 * 3, 32, 32) and a.dtype == torch.float32 and label == i
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)           # the same samples, resampled alike
        assert (a - c).abs().mean() < 0.5                              # AAC: lossy and delayed, same tone
        assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])     # one image, 3 channels
    test = _dataset(r / 'audio', audio_tree['list'], 'frames', mode='test')
    clip, _, _ = test[1]
    assert clip.shape == (3, 12, 32, 32) and torch.equal(clip[0], clip[2])   # 3 crops: the same image
    torch.testing.assert_close(clip[0], wav[1][0])


def test_missing_audio_is_named_at_start_up_or_skipped(audio_tree, tmp_path, write_list):
    r = audio_tree['root']
    os.remove(r / 'audio' / 'v1.wav')
    write_video(str(r / 'videos' / 'v2.mp4'), np.zeros((9, 32, 32, 3), np.uint8), fps=12)   # no track
    with pytest.raises(ValueError, match=r'1 videos have no audio: .*v1\.wav; give --allow_missing_audio'):
        _dataset(r / 'audio', audio_tree['list'], 'frames')
    with pytest.raises(ValueError, match=r'v2\.mp4'):
        _dataset(r / 'videos', audio_tree['video_list'], 'video')
    ds = _dataset(r / 'audio', audio_tree['list'], 'frames', audio=dict(fps=12, allow_missing=True))
    assert ds.video_ids == ['v0', 'v2'] and ds.num_missing_audio == 1
    with pytest.raises(ValueError, match=r"v9 \(in .*audio\.h5\)"):
        _dataset(r / 'audio.h5', write_list(tmp_path / 'l9.txt', ['v9 10 0']), 'hdf5')


# ---------------------------------------------------------------------------------------------- toy
def test_toy_soundtrack_tells_pair_and_direction():
    fwd = soundtrack(2, 16, np.random.default_rng(5))
    back = soundtrack(3, 16, np.random.default_rng(5))
    assert fwd.shape == (16 * AUDIO_RATE // 12,)
    np.testing.assert_array_equal(back, fwd[::-1])                       # the reversed class, exactly
    # pitch: the dominant frequency of the first 0.2 s is the pair's (x 0.9 .. 1.1, gliding upwards)
    spectrum = np.abs(np.fft.rfft(fwd[:3200]))
    peak = np.argmax(spectrum) * AUDIO_RATE / 3200
    assert 0.85 * PAIR_PITCH[1] < peak < 1.25 * PAIR_PITCH[1]
    assert np.abs(fwd[-3200:]).mean() > 2 * np.abs(fwd[:3200]).mean()   # it swells forward


def test_toy_set_has_wavs_and_audio_tracks(tiny_toy):
    toy = os.path.join(tiny_toy, 'toy')
    assert has_audio_track(os.path.join(toy, 'videos', '000001.mp4'))
    wave, rate = decode_audio(os.path.join(toy, 'audio', '000001.wav'))
    with open(os.path.join(toy, 'train_rgb.txt')) as f:
        vid, n, _ = f.readline().split()
    assert vid == '000001' and rate == AUDIO_RATE and len(wave) == int(n) * AUDIO_RATE // 12


# ---------------------------------------------------------------------------------------------- tools
def test_extract_audio_resumes_and_records_settings(audio_tree, tmp_path, capsys):
    extract = load_script('scripts/extract_audio.py', 'extract_audio')
    out = tmp_path / 'out'
    argv = ['--video_list', audio_tree['video_list'], '--video_dir', str(audio_tree['root'] / 'videos'),
            '--out_dir', str(out), '--workers', '1']
    assert extract.main(argv) == 0
    marker = json.loads((out / 'v1.wav.done').read_text())
    assert marker['sample_rate'] == 24000 and marker['num_frames'] == 18
    assert (out / 'audio_list.txt').read_text().splitlines() == ['v0 12 0', 'v1 18 1', 'v2 9 2']
    wave, rate = decode_audio(str(out / 'v1.wav'))
    assert rate == 24000 and len(wave) == marker['num_samples']
    stamp = os.stat(out / 'v1.wav').st_mtime_ns
    assert extract.main(argv) == 0 and os.stat(out / 'v1.wav').st_mtime_ns == stamp     # kept, not redone
    with pytest.raises(SystemExit):
        extract.main(argv + ['--sample_rate', '16000'])
    assert 'made with --sample_rate 24000, this run asks for 16000' in capsys.readouterr().err


def test_check_data_reports_missing_and_short_audio(audio_tree, write_list, capsys):
    check = load_script('scripts/check_data.py', 'check_data')
    r = audio_tree['root']
    good = ['toy', '--modality', 'Audio', '--root_path', str(r / 'audio'), '--data_format', 'frames',
            '--train_list', audio_tree['list'], '--split', 'train', '--audio_fps', '12']
    assert check.main(good) == 0
    bad = write_list(r / 'bad.txt', ['v0 30 0', 'v1 18 1', 'v7 5 2'])   # v0: 12 frames of audio, v7: none
    assert check.main(good[:-6] + ['--train_list', bad, '--split', 'train', '--audio_fps', '12']) == 1
    out = capsys.readouterr().out
    assert 'short_audio: ' in out and 'v0.wav: 1.000 s of audio for 30 frames at 12 fps (2.500 s)' in out
    assert 'missing_audio: ' in out and 'v7.wav: no such file' in out


def test_audio_first_conv_loads_unchanged():
    # a 3-channel first conv is kept between RGB and Audio (the Audio input repeats one image: an RGB kernel
    # and its channel mean compute the same function), and an Audio file loads into an Audio model as is
    from ops.checkpoint import load_weights
    from ops.models import TSN
    torch.manual_seed(0)
    rgb = TSN(8, 2, 'RGB', base_model='resnet18', pretrain='none', input_size=32)
    audio = TSN(8, 2, 'Audio', base_model='resnet18', pretrain='none', input_size=32)
    for source in (rgb, audio):
        target = TSN(8, 2, 'Audio', base_model='resnet18', pretrain='none', input_size=32)
        report = load_weights(target, source.state_dict(), strict=True)
        assert report.get('first_conv') is None
        assert torch.equal(target.base_model.conv1.weight, source.base_model.conv1.weight)
    x = torch.randn(1, 1, 32, 32).expand(1, 3, 32, 32).repeat(1, 2, 1, 1)   # 2 segments, 3 equal channels
    mean_kernel = TSN(8, 2, 'Audio', base_model='resnet18', pretrain='none', input_size=32).eval()
    mean_kernel.load_state_dict(audio.state_dict())
    with torch.no_grad():
        w = audio.base_model.conv1.weight
        mean_kernel.base_model.conv1.weight.copy_(w.mean(1, keepdim=True).expand_as(w))
        torch.testing.assert_close(mean_kernel(x), audio.eval()(x), atol=1e-5, rtol=1e-4)


def test_audio_options_reach_the_dataset_spec(tmp_path):
    from opts import dataset_spec, parse_test_args
    (tmp_path / 'x.pth.tar').write_bytes(b'')   # parsing checks that the file exists, nothing reads it
    args = parse_test_args(['toy', '--weights', str(tmp_path / 'x.pth.tar'), '--audio_n_mels', '64',
                            '--audio_fps', '25', '--data_format', 'video'])
    spec = dataset_spec(args, 'Audio')
    assert spec.audio['n_mels'] == 64 and spec.audio['fps'] == 25 and spec.audio['n_fft'] == 1024
    assert spec.root_path.endswith(os.path.join('toy', 'videos')) and dataset_spec(args, 'RGB').audio is None

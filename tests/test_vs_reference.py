"""benchmark.py vs_reference: alternating fresh-process measurements of our code and a reference TSM
checkout. The real reference cannot be downloaded in tests, so the test writes a stand-in checkout with
the reference's module layout and constructor signatures (ops/dataset.py TSNDataSet, ops/transforms.py
Group* classes, ops/models.py TSN); our side runs for real."""
import json
import textwrap

import pytest

STAND_IN = {
    'ops/__init__.py': '',
    'ops/transforms.py': '''
        class _Pass:
            def __init__(self, *args, **kwargs):
                pass

            def __call__(self, x):
                return x
        GroupMultiScaleCrop = GroupRandomHorizontalFlip = GroupScale = GroupFullResSample = _Pass
        Stack = ToTorchFormatTensor = GroupNormalize = IdentityTransform = _Pass
        ''',
    'ops/dataset.py': '''
        import torch

        class TSNDataSet:
            def __init__(self, root_path, list_file, num_segments=3, new_length=1, modality='RGB',
                         image_tmpl='img_{:05d}.jpg', transform=None, random_shift=True, test_mode=False,
                         remove_missing=False, dense_sample=False, twice_sample=False):
                self.items = [line.split() for line in open(list_file)]
                self.transform = transform

            def __len__(self):
                return len(self.items)

            def __getitem__(self, index):
                return self.transform(torch.zeros(3, 8, 8)), int(self.items[index][2])
        ''',
    'ops/models.py': '''
        import torch

        class TSN(torch.nn.Module):
            def __init__(self, num_class, num_segments, modality, base_model='resnet101', new_length=None,
                         consensus_type='avg', before_softmax=True, dropout=0.8, img_feature_dim=256,
                         crop_num=1, partial_bn=True, print_spec=True, pretrain='imagenet', is_shift=False,
                         shift_div=8, shift_place='blockres', fc_lr5=False, temporal_pool=False,
                         non_local=False):
                super().__init__()
                self.fc = torch.nn.Linear(3, num_class)

            def get_optim_policies(self):
                return [{'params': list(self.fc.parameters()), 'lr_mult': 1, 'decay_mult': 1, 'name': 'fc'}]

            def forward(self, x):
                return self.fc(x.mean((2, 3))[:, :3])
        ''',
}

TINY = ['--input_size', '32', '--num_segments', '2', '--samples', '2', '--width', '48', '--height', '40',
        '--num_frames', '12', '--num_videos', '2', '--repeats', '1', '--steps', '1', '--arch', 'resnet18',
        '--batch_size', '1', '--num_class', '3']


@pytest.mark.slow
def test_alternating_runs_report_both_sides_and_ratios(run_cli, tmp_path):
    ref = tmp_path / 'reference'
    for name, text in STAND_IN.items():
        (ref / name).parent.mkdir(parents=True, exist_ok=True)
        (ref / name).write_text(textwrap.dedent(text))
    out = run_cli(['scripts/benchmark.py', 'vs_reference', '--reference', str(ref), '--cases',
                   'load-test,train-fp32', *TINY, '--json'], cwd=tmp_path, timeout=600).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert [r['case'] for r in result['cases']] == ['load-test', 'train-fp32']
    # model cases alone: no data tree is written or read
    out = run_cli(['scripts/benchmark.py', 'vs_reference', '--reference', str(ref), '--cases', 'infer-fp32', *TINY,
                   '--json'], cwd=tmp_path, timeout=600).stdout
    assert json.loads(out.strip().splitlines()[-1])['cases'][0]['ref_ms'] > 0
    for row in result['cases']:
        assert row['ours_ms'] > 0 and row['ref_ms'] > 0
        assert row['speedup'] == pytest.approx(row['ref_ms'] / row['ours_ms'])
    assert result['repeats'] == 1 and result['ours_output'] == 'uint8'


def test_refuses_a_path_that_is_not_a_tsm_checkout(run_cli, tmp_path):
    proc = run_cli(['scripts/benchmark.py', 'vs_reference', '--reference', str(tmp_path)], cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0 and 'no ops/models.py there' in proc.stderr

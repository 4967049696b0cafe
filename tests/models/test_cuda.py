import contextlib

import pytest
import torch

from pbd_deploy.models.detector import Detector
from tests.conftest import tiny_config


@pytest.mark.gpu
def test_detector_on_cuda_matches_cpu():
    # full fp32 on the GPU: cuDNN convolutions default to TF32 (10-bit mantissa, ~5e-4)
    with _full_fp32():
        _detector_on_cuda_matches_cpu()


@contextlib.contextmanager
def _full_fp32():
    settings = (torch.backends.cudnn, torch.backends.cuda.matmul)
    before = [s.allow_tf32 for s in settings]
    for s in settings:
        s.allow_tf32 = False
    try:
        yield
    finally:
        for s, value in zip(settings, before):
            s.allow_tf32 = value


def _detector_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = Detector(tiny_config()).eval()
    frames = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        cpu = model(frames)
        gpu = model.cuda()(frames.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)

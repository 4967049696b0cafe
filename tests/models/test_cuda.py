import pytest
import torch

from pbd_deploy.models.detector import Detector
from tests.conftest import tiny_config


@pytest.mark.gpu
def test_detector_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = Detector(tiny_config()).eval()
    frames = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        cpu = model(frames)
        gpu = model.cuda()(frames.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)

import json

import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require


def test_require_returns_the_module_or_names_the_extra():
    assert require("json", "dev") is json
    with pytest.raises(PbdError, match=r"pip install 'pbd-deploy\[trt\]'"):
        require("tensorrt_that_is_not_here", "trt")

"""secbook.notebook_setup: the first cell of every chapter."""
import logging
import warnings

import torch


def test_setup_quiets_seeds_and_names_the_machine():
    import secbook
    from secbook.notebook import QUIET_LOGGERS

    with warnings.catch_warnings():
        logging.getLogger("torchao").setLevel(logging.DEBUG)
        machine = secbook.notebook_setup(seed=3)
        a = torch.rand(3)
        secbook.notebook_setup(seed=3)
        assert torch.equal(a, torch.rand(3))
        assert all(logging.getLogger(n).level == logging.ERROR for n in QUIET_LOGGERS)
        assert "cores" in machine and "torch" in machine
        warnings.warn("silenced")  # filterwarnings("ignore") is in force inside this block

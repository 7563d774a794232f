"""`--jobs N` on accelerators: each worker process trains on its own GPU; CPUs work as before."""

import pytest

from diffplan.errors import BadInputError
from diffplan.training.parallel import job_devices
from diffplan.training.run import TrainOptions


def test_each_job_worker_takes_one_gpu_of_the_devices_given():
    assert job_devices(TrainOptions(accelerator="gpu", devices=[0, 1, 2]), 3, visible_gpus=4) == [0, 1, 2]
    assert job_devices(TrainOptions(accelerator="gpu", devices=[2, 3]), 3, visible_gpus=4) == [2, 3, 2]
    assert job_devices(TrainOptions(accelerator="gpu", devices=2), 4, visible_gpus=8) == [0, 1, 0, 1]
    assert job_devices(TrainOptions(), 2, visible_gpus=2) == [0, 1]  # auto: every visible GPU


def test_jobs_on_cpus_need_no_device_and_jobs_do_not_mix_with_ddp():
    assert job_devices(TrainOptions(), 3, visible_gpus=0) is None
    assert job_devices(TrainOptions(accelerator="cpu", devices=2), 2, visible_gpus=4) is None
    with pytest.raises(BadInputError, match="not a visible GPU"):
        job_devices(TrainOptions(accelerator="gpu", devices=[5]), 1, visible_gpus=2)
    with pytest.raises(BadInputError, match="none is visible"):
        job_devices(TrainOptions(accelerator="gpu"), 1, visible_gpus=0)
    with pytest.raises(BadInputError, match="--strategy"):
        job_devices(TrainOptions(strategy="ddp"), 2, visible_gpus=0)

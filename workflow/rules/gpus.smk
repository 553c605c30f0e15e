# GPU jobs on a machine without a cluster scheduler: at most one per GPU, each on GPUs of its own.
# Snakemake counts `resources: gpu` only against a declared total and never says which GPU is a
# job's (snakemake/snakemake#281), so the total is declared here and every GPU rule's command
# goes through gpu_job(): the flexseg.gpu_slots wrapper, which claims free ids (a flock the kernel
# drops when the job dies) and sets CUDA_VISIBLE_DEVICES. With no GPUs found (a CPU-only machine,
# `gpus: 0`) and in a cluster job step (its scheduler gave it its GPUs), gpu_job() adds nothing: the
# rules run their plain commands, as before.
from flexseg.gpu_slots import IDS_ENV, GpuError, usable_gpus, whole_gpus

if workflow.remote_exec:
    GPUS = []
else:
    try:
        GPUS = usable_gpus(config["gpus"])
    except GpuError as err:
        raise WorkflowError(str(err)) from None

GPU_SLOT = ""
if GPUS:
    # The ids reach the wrapper through the jobs' environment and the count through a format
    # field: the command's text (which Snakemake compares to rerun on code changes) is the same
    # for any GPUs.
    os.environ[IDS_ENV] = ",".join(GPUS)
    GPU_SLOT = "python -m flexseg.gpu_slots run --count {resources.gpu} -- "
    workflow.global_resources.setdefault("gpu", len(GPUS))
    _nproc = config["training"]["nproc"]
    # a DDP job takes whole GPUs (CUDA shows a process one MIG instance at most)
    _fit = GPUS if _nproc == 1 else whole_gpus(GPUS)
    _usable = min(len(_fit), workflow.global_resources["gpu"].value)
    if _nproc > _usable:
        raise WorkflowError(
            f"training.nproc is {_nproc}: each training job needs that many "
            f"GPUs, but {_usable} can be used here (GPUs {','.join(GPUS)}; MIG instances do not "
            "count for DDP; set gpus or CUDA_VISIBLE_DEVICES, or lower training.nproc)"
        )


def gpu_job(command):
    """A GPU rule's shell command, through the GPU-slot wrapper when this run hands out GPUs
    (exactly ``command`` when it does not)."""
    return GPU_SLOT + command

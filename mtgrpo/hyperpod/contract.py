"""What the rendered HyperPod job and the image agree on (standard library only).

The renderer (:mod:`mtgrpo.hyperpod.render`) mounts the rendered ConfigMap at
:data:`CONFIG_DIR`, sets the variables below and starts :data:`COMMAND`; the image's HyperPod
entry (:mod:`mtgrpo.hyperpod.job`) reads them. Both import this module.
"""

from __future__ import annotations

API_GROUP = "sagemaker.amazonaws.com"
API_VERSION = f"{API_GROUP}/v1"
KIND = "HyperPodPyTorchJob"
PLURAL = "hyperpodpytorchjobs"

# The ConfigMap's mount point and its two keys.
CONFIG_DIR = "/etc/mtgrpo"
HYPERPARAMETERS_KEY = "hyperparameters.json"  # the static trainer hyperparameters (strings)
PLATFORM_KEY = "hyperpod.json"  # channels, output_path, checkpoints (S3 URI or FSx path)
CONFIG_DIR_ENV = "MTGRPO_HYPERPOD_CONFIG_DIR"  # tests point it at a temporary directory

# The job's name (from the pod label the operator sets), naming its S3 prefixes.
JOB_NAME_ENV = "MTGRPO_JOB_NAME"
JOB_NAME_LABEL = "HPJob"  # the operator's pod label (the SDK lists a job's pods by it)

CONTAINER = "pytorch"
REPLICA_SPEC = "pods"
# The HyperPod elastic agent (hyperpodrun, from the hyperpod-elastic-agent package in the
# image) is how the operator starts, ranks and restarts a pod's processes. It starts ONE
# process per pod: the image's launcher, which starts vLLM and the pod's training ranks itself
# exactly as on SageMaker, so --nproc-per-node is 1 whatever the GPU count.
AGENT = "hyperpodrun"
AGENT_PORT = 8080  # the agent's server, which the operator calls
ENTRY = ("-m", "mtgrpo.hyperpod", "train")
NNODES_ENV = "NNODES"  # read by the agent's rendezvous backend

# What the agent sets in the one process it starts (torchelastic's names).
GROUP_RANK = "GROUP_RANK"
GROUP_WORLD_SIZE = "GROUP_WORLD_SIZE"
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
RESTART_COUNT = "JOB_RESTART_COUNT"

TERMINATION_LOG = "/dev/termination-log"
SHM_DIR = "/dev/shm"


def command(nodes: int) -> list[str]:
    """The container's command: the agent, one process per pod, the image's HyperPod entry."""
    return [AGENT, f"--nnodes={nodes}", "--nproc-per-node=1",
            f"--server-port={AGENT_PORT}", *ENTRY]
